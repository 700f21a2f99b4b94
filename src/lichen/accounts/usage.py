"""Usage per account: daily totals of requests, tokens and credits, per model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.clock import Clock, system_clock, to_ms
from lichen.storage.accounts_tables import AccountUsageRow


def utc_day(seconds: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


@dataclass(frozen=True, slots=True, kw_only=True)
class DailyUsage:
    day: str  # UTC "YYYY-MM-DD"
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    credits: int  # micro-credits charged

    def public(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "model": self.model,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "credits": self.credits,
        }


class UsageRepository:
    def __init__(self, engine: AsyncEngine, *, clock: Clock = system_clock) -> None:
        self._engine = engine
        self._clock = clock

    async def record(
        self,
        account_id: str,
        *,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        credits: int = 0,
    ) -> None:
        """Add one request to today's totals (an atomic upsert on both databases)."""
        async with self._engine.begin() as conn:
            dialect_insert: Any = (
                postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            )
            stmt = dialect_insert(AccountUsageRow).values(
                account_id=account_id,
                day=utc_day(self._clock()),
                model=model,
                requests=1,
                prompt_tokens=max(0, prompt_tokens),
                completion_tokens=max(0, completion_tokens),
                credits=max(0, credits),
                created_ms=to_ms(self._clock()),
            )
            table = AccountUsageRow
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[table.account_id, table.day, table.model],
                    set_={
                        "requests": table.requests + 1,
                        "prompt_tokens": table.prompt_tokens + stmt.excluded.prompt_tokens,
                        "completion_tokens": (
                            table.completion_tokens + stmt.excluded.completion_tokens
                        ),
                        "credits": table.credits + stmt.excluded.credits,
                    },
                )
            )

    async def daily(self, account_id: str, *, days: int = 90) -> list[DailyUsage]:
        """The last ``days`` days of totals, newest first."""
        since = utc_day(self._clock() - days * 86_400)
        query = (
            select(AccountUsageRow)
            .where(AccountUsageRow.account_id == account_id, AccountUsageRow.day >= since)
            .order_by(AccountUsageRow.day.desc(), AccountUsageRow.model)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            DailyUsage(
                day=row.day,
                model=row.model,
                requests=int(row.requests),
                prompt_tokens=int(row.prompt_tokens),
                completion_tokens=int(row.completion_tokens),
                credits=int(row.credits),
            )
            for row in rows
        ]
