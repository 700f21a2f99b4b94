"""Prompts and answers that a policy keeps: the ``dataset`` log and the public feed.

Each kept exchange is one ``prompt_log`` row and one ``completion_log`` row with the
same request id, written in one transaction (the policy guard refuses either, and
then neither is written). Rows carry a pseudonymous ``subject`` (for per-user
deletion and export) and the SHA-256 of a deletion token the sender got back in
the ``x-lichen-deletion-token`` response header.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.errors import ErrorCode, LichenError
from lichen.privacy.policy import Policy
from lichen.storage.tables import CompletionLog, PromptLog

SUBJECT_DOMAIN = b"lichen-subject-v1\x00"

# Drivers that log statement parameters (prompt text, here) at DEBUG or INFO.
PARAMETER_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "asyncpg")


def silence_parameter_logging() -> None:
    """Keep the database drivers from logging the prompts and answers this module writes."""
    for name in PARAMETER_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def new_deletion_token() -> str:
    return "ldt_" + secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def subject_of(api_key: str | None, user: str | None) -> str | None:
    """A pseudonymous id for the sender: from the API key, else the ``user`` field."""
    if api_key:
        material = b"key:" + api_key.encode("utf-8")
    elif user:
        material = b"user:" + user.encode("utf-8")
    else:
        return None
    return hashlib.sha256(SUBJECT_DOMAIN + material).hexdigest()[:32]


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """One prompt and its answer, as kept."""

    request_id: str
    created_ms: int
    subject: str | None
    public: bool
    model: str
    kind: str  # "chat" | "completion"
    prompt: Any  # list of {"role", "content"} (chat) or a string (completion)
    completion: str
    finish_reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "created_ms": self.created_ms,
            "subject": self.subject,
            "public": self.public,
            "model": self.model,
            "kind": self.kind,
            "prompt": self.prompt,
            "completion": self.completion,
            "finish_reason": self.finish_reason,
        }

    def feed_json(self) -> dict[str, Any]:
        """What the public feed shows: no subject, no deletion data."""
        return {
            "id": self.request_id,
            "created_ms": self.created_ms,
            "model": self.model,
            "prompt": self.prompt,
            "completion": self.completion,
        }


class ContentRepository:
    """The ``prompt_log`` and ``completion_log`` tables."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        silence_parameter_logging()

    async def keep(self, exchange: Exchange, deletion_token: str, policy: Policy) -> None:
        """Store one exchange, or nothing, as the policy allows (``POLICY_FORBIDS`` otherwise)."""
        if exchange.public and policy.public_feed == "off":
            raise LichenError(ErrorCode.POLICY_FORBIDS, "this network has no public feed")
        if not exchange.public and policy.prompt_logging != "full":
            raise LichenError(ErrorCode.POLICY_FORBIDS, "this network does not log prompts")
        common = {
            "request_id": exchange.request_id,
            "created_ms": exchange.created_ms,
            "subject": exchange.subject,
            "deletion_hash": token_hash(deletion_token),
            "public": exchange.public,
        }
        async with self._engine.begin() as connection:
            await connection.execute(
                insert(PromptLog).values(
                    **common,
                    model=exchange.model,
                    kind=exchange.kind,
                    text=json.dumps(exchange.prompt, ensure_ascii=False),
                )
            )
            await connection.execute(
                insert(CompletionLog).values(
                    **common, finish_reason=exchange.finish_reason, text=exchange.completion
                )
            )

    async def _select(self, *where: Any, limit: int | None = None) -> list[Exchange]:
        query = (
            select(
                PromptLog.request_id,
                PromptLog.created_ms,
                PromptLog.subject,
                PromptLog.public,
                PromptLog.model,
                PromptLog.kind,
                PromptLog.text.label("prompt"),
                CompletionLog.text.label("completion"),
                CompletionLog.finish_reason,
            )
            .join(CompletionLog, CompletionLog.request_id == PromptLog.request_id, isouter=True)
            .where(*where)
            .order_by(PromptLog.created_ms.desc(), PromptLog.id.desc())
        )
        if limit is not None:
            query = query.limit(limit)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            Exchange(
                request_id=row.request_id,
                created_ms=row.created_ms,
                subject=row.subject,
                public=row.public,
                model=row.model,
                kind=row.kind,
                prompt=json.loads(row.prompt),
                completion=row.completion or "",
                finish_reason=row.finish_reason or "",
            )
            for row in rows
        ]

    async def feed(self, limit: int = 50) -> list[Exchange]:
        """The newest public posts."""
        return await self._select(PromptLog.public.is_(True), limit=max(0, min(limit, 500)))

    async def get_public(self, request_id: str) -> Exchange | None:
        found = await self._select(PromptLog.public.is_(True), PromptLog.request_id == request_id)
        return found[0] if found else None

    async def export(self, subject: str | None = None) -> AsyncIterator[Exchange]:
        """Every kept exchange (or one subject's), newest first."""
        where = [] if subject is None else [PromptLog.subject == subject]
        for exchange in await self._select(*where):
            yield exchange

    async def delete_by_token(self, request_id: str, token: str) -> bool:
        """Delete one exchange if ``token`` is its deletion token; False if none matched."""
        digest = token_hash(token)
        async with self._engine.begin() as connection:
            found = await connection.scalar(
                select(PromptLog.id).where(
                    PromptLog.request_id == request_id, PromptLog.deletion_hash == digest
                )
            )
            if found is None:
                return False
            await connection.execute(delete(PromptLog).where(PromptLog.request_id == request_id))
            await connection.execute(
                delete(CompletionLog).where(CompletionLog.request_id == request_id)
            )
        return True

    async def delete_subject(self, subject: str) -> int:
        """Delete everything kept for one sender; returns the number of exchanges."""
        async with self._engine.begin() as connection:
            result = await connection.execute(delete(PromptLog).where(PromptLog.subject == subject))
            await connection.execute(delete(CompletionLog).where(CompletionLog.subject == subject))
        return int(result.rowcount or 0)
