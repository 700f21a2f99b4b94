"""API keys: created and shown once, stored as a digest, scoped, revocable at once.

Every request resolves its key against the database (no cache), so a revoked
key, or a key of a deleted account, stops working on the very next request, on
every gateway that shares the database.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.accounts.principal import SCOPES
from lichen.accounts.tokens import digest, looks_like_api_key, new_api_key
from lichen.clock import Clock, system_clock, to_ms
from lichen.errors import ErrorCode, LichenError
from lichen.storage.accounts_tables import AccountRow, ApiKeyRow

MAX_KEYS_PER_ACCOUNT = 50
NAME_MAX = 100
LAST_USED_RESOLUTION_MS = 60_000  # last_used_ms is refreshed at most once a minute


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """What is known about a key after creation: everything but the secret."""

    id: str
    account_id: str
    name: str
    prefix: str  # e.g. "lk-AbC123xy"; the listing shows it followed by "…"
    scopes: tuple[str, ...]
    created_ms: int
    last_used_ms: int | None
    revoked_ms: int | None

    @property
    def active(self) -> bool:
        return self.revoked_ms is None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix + "…",
            "scopes": list(self.scopes),
            "created_ms": self.created_ms,
            "last_used_ms": self.last_used_ms,
            "revoked_ms": self.revoked_ms,
        }


@dataclass(frozen=True, slots=True)
class NewApiKey:
    key: ApiKey
    secret: str  # the full key: shown to its owner once, never stored


_COLUMNS = (
    ApiKeyRow.id,
    ApiKeyRow.account_id,
    ApiKeyRow.name,
    ApiKeyRow.prefix,
    ApiKeyRow.scopes,
    ApiKeyRow.created_ms,
    ApiKeyRow.last_used_ms,
    ApiKeyRow.revoked_ms,
)


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        prefix=row.prefix,
        scopes=tuple(s for s in row.scopes.split() if s),
        created_ms=row.created_ms,
        last_used_ms=row.last_used_ms,
        revoked_ms=row.revoked_ms,
    )


def check_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise LichenError(
            ErrorCode.INVALID_REQUEST,
            f"scopes must be a non-empty subset of {', '.join(SCOPES)}",
            param="scopes",
        )
    return tuple(s for s in SCOPES if s in scopes)


class ApiKeyService:
    def __init__(self, engine: AsyncEngine, *, clock: Clock = system_clock) -> None:
        self._engine = engine
        self._clock = clock

    async def create(
        self,
        account_id: str,
        *,
        name: str,
        scopes: list[str] | tuple[str, ...],
        granted: frozenset[str] | None = None,
    ) -> NewApiKey:
        """A new key. ``granted``: the scopes of the credential asking for it (a key can
        mint keys with its own scopes at most, never broader ones)."""
        name = name.strip() or "key"
        if len(name) > NAME_MAX:
            raise LichenError(ErrorCode.INVALID_REQUEST, "key name is too long", param="name")
        wanted = check_scopes(scopes)
        if granted is not None and not set(wanted) <= granted:
            raise LichenError(
                ErrorCode.FORBIDDEN,
                "a key can only create keys with scopes it has itself: "
                f"{', '.join(sorted(set(wanted) - granted))} not allowed",
                param="scopes",
            )
        secret, prefix = new_api_key()
        key = ApiKey(
            id=uuid.uuid4().hex,
            account_id=account_id,
            name=name,
            prefix=prefix,
            scopes=wanted,
            created_ms=to_ms(self._clock()),
            last_used_ms=None,
            revoked_ms=None,
        )
        async with self._engine.begin() as conn:
            active = await conn.scalar(
                select(func.count())
                .select_from(ApiKeyRow)
                .where(ApiKeyRow.account_id == account_id, ApiKeyRow.revoked_ms.is_(None))
            )
            if (active or 0) >= MAX_KEYS_PER_ACCOUNT:
                raise LichenError(
                    ErrorCode.INVALID_REQUEST,
                    f"an account holds at most {MAX_KEYS_PER_ACCOUNT} active keys",
                )
            await conn.execute(
                insert(ApiKeyRow).values(
                    id=key.id,
                    account_id=account_id,
                    name=name,
                    prefix=prefix,
                    key_hash=digest(secret),
                    scopes=" ".join(wanted),
                    created_ms=key.created_ms,
                )
            )
        return NewApiKey(key=key, secret=secret)

    async def all_for(self, account_id: str) -> list[ApiKey]:
        query = (
            select(*_COLUMNS)
            .where(ApiKeyRow.account_id == account_id)
            .order_by(ApiKeyRow.created_ms, ApiKeyRow.id)
        )
        async with self._engine.connect() as conn:
            return [_key(row) for row in (await conn.execute(query)).all()]

    async def revoke(self, account_id: str, key_id: str) -> ApiKey:
        """Revoke one of the account's keys; effective for the next request anywhere."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(ApiKeyRow)
                .where(
                    ApiKeyRow.id == key_id,
                    ApiKeyRow.account_id == account_id,
                    ApiKeyRow.revoked_ms.is_(None),
                )
                .values(revoked_ms=to_ms(self._clock()))
            )
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(
                        ApiKeyRow.id == key_id, ApiKeyRow.account_id == account_id
                    )
                )
            ).first()
        if row is None:
            raise LichenError(ErrorCode.NOT_FOUND, "no such API key", param="id")
        return _key(row)

    async def rename(self, account_id: str, key_id: str, name: str) -> ApiKey:
        name = name.strip()
        if not name or len(name) > NAME_MAX:
            raise LichenError(
                ErrorCode.INVALID_REQUEST, f"a key name has 1-{NAME_MAX} characters", param="name"
            )
        async with self._engine.begin() as conn:
            await conn.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.account_id == account_id)
                .values(name=name)
            )
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(
                        ApiKeyRow.id == key_id, ApiKeyRow.account_id == account_id
                    )
                )
            ).first()
        if row is None:
            raise LichenError(ErrorCode.NOT_FOUND, "no such API key", param="id")
        return _key(row)

    async def resolve(self, secret: str) -> ApiKey | None:
        """The active key for ``secret`` (of an active account), or None."""
        if not looks_like_api_key(secret):
            return None
        query = (
            select(*_COLUMNS)
            .join(AccountRow, AccountRow.id == ApiKeyRow.account_id)
            .where(
                ApiKeyRow.key_hash == digest(secret),
                ApiKeyRow.revoked_ms.is_(None),
                AccountRow.deleted_ms.is_(None),
            )
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        key = _key(row)
        now = to_ms(self._clock())
        if key.last_used_ms is None or now - key.last_used_ms >= LAST_USED_RESOLUTION_MS:
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(ApiKeyRow).where(ApiKeyRow.id == key.id).values(last_used_ms=now)
                )
        return key
