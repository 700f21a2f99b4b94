"""The operators' action log: one row per write through the admin API.

Who (the operator's account and API key ids), what (``invite.create``,
``member.revoke``, ``credits.grant``, ...), on what (an invite id, a peer id, a
ledger account) and a short summary. Never a secret (invite tokens, keys) and
never request content. Written in the same request as the change it records,
after the change succeeded; a refused request leaves no row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.clock import Clock, system_clock, to_ms
from lichen.storage.accounts_tables import (
    ACTION_MAX,
    DETAIL_MAX,
    TARGET_MAX,
    OperatorActionRow,
)

log = logging.getLogger(__name__)

MAX_LISTED = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorAction:
    id: int
    created_ms: int
    account_id: str
    key_id: str
    action: str
    target: str
    detail: str

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_ms": self.created_ms,
            "account_id": self.account_id,
            "key_id": self.key_id,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
        }


class ActionLog:
    def __init__(self, engine: AsyncEngine, *, clock: Clock = system_clock) -> None:
        self._engine = engine
        self._clock = clock

    async def record(
        self, *, account_id: str, key_id: str, action: str, target: str, detail: str = ""
    ) -> None:
        row = {
            "created_ms": to_ms(self._clock()),
            "account_id": account_id,
            "key_id": key_id,
            "action": action[:ACTION_MAX],
            "target": target[:TARGET_MAX],
            "detail": detail[:DETAIL_MAX],
        }
        async with self._engine.begin() as connection:
            await connection.execute(insert(OperatorActionRow).values(**row))
        log.info("operator %s: %s %s", account_id, row["action"], row["target"])

    async def recent(self, limit: int = 100) -> list[OperatorAction]:
        """The newest ``limit`` actions, newest first."""
        query = (
            select(OperatorActionRow)
            .order_by(OperatorActionRow.id.desc())
            .limit(max(1, min(limit, MAX_LISTED)))
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            OperatorAction(
                id=r.id,
                created_ms=r.created_ms,
                account_id=r.account_id,
                key_id=r.key_id,
                action=r.action,
                target=r.target,
                detail=r.detail,
            )
            for r in rows
        ]
