"""The retention sweeper: deletes rows older than their data class's retention.

Every table with a data class (``TABLE_DATA_CLASS``) and a ``created_ms`` column is
swept: rows with ``created_ms < now - retention`` are deleted, nothing else. The
clock is injectable, so tests can move time instead of waiting. ``task()``
sweeps periodically inside the gateway/tracker process (:class:`~lichen.periodic.Periodic`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Table, delete
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.periodic import Periodic
from lichen.privacy.policy import Policy
from lichen.storage.tables import TABLE_DATA_CLASS, Base

log = logging.getLogger(__name__)

Clock = Callable[[], float]  # seconds since the epoch

TIME_COLUMN = "created_ms"


def swept_tables() -> list[Table]:
    """Tables the sweeper can age: they have a data class and a ``created_ms`` column."""
    return [
        table
        for name, table in sorted(Base.metadata.tables.items())
        if name in TABLE_DATA_CLASS and TIME_COLUMN in table.c
    ]


class RetentionSweeper:
    """Deletes expired rows per data class, as the policy's retention windows say."""

    def __init__(self, engine: AsyncEngine, policy: Policy, *, clock: Clock = time.time) -> None:
        self.engine = engine
        self.policy = policy
        self.clock = clock

    async def sweep(self) -> dict[str, int]:
        """Delete what has expired now; returns table name -> rows deleted (only non-zero)."""
        now_ms = int(self.clock() * 1000)
        deleted: dict[str, int] = {}
        async with self.engine.begin() as connection:
            for table in swept_tables():
                retention = self.policy.retention_s(TABLE_DATA_CLASS[table.name])
                if retention is None:
                    continue
                cutoff = now_ms - retention * 1000
                result = await connection.execute(
                    delete(table).where(table.c[TIME_COLUMN] < cutoff)
                )
                if result.rowcount:
                    deleted[table.name] = int(result.rowcount)
        for name, count in deleted.items():
            log.info("retention: deleted %d expired rows from %s", count, name)
        return deleted

    def task(self, every_s: float) -> Periodic:
        """Sweep now and then every ``every_s`` seconds, from ``start()`` until ``stop()``."""
        return Periodic("retention", self.sweep, every_s, log=log, failure="retention sweep failed")
