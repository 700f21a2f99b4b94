"""Persisting reputation: load it at start, write changed nodes back now and then.

Reputation changes on every answer, so writes are batched: :class:`ReputationKeeper`
flushes the book's changed records every ``flush_s`` seconds and once more at stop.
A crash loses at most that window of observations, which only decay anyway.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.periodic import Periodic
from lichen.reputation.book import NodeRecord, ReputationBook
from lichen.storage.reputation_tables import NodeReputationRow

log = logging.getLogger(__name__)

FLUSH_S = 10.0


class ReputationStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def load(self) -> list[NodeRecord]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(NodeReputationRow))).all()
        return [
            NodeRecord(
                peer_id=row.peer_id,
                success=float(row.success),
                ttft_s=row.ttft_s,
                latency_s=row.latency_s,
                volume=float(row.volume),
                jobs=int(row.jobs),
                failures=int(row.failures),
                updated=row.updated_ms / 1000,
            )
            for row in rows
        ]

    async def save(self, records: list[NodeRecord]) -> None:
        if not records:
            return
        async with self._engine.begin() as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            stmt = dialect.insert(NodeReputationRow)
            columns = ("success", "ttft_s", "latency_s", "volume", "jobs", "failures", "updated_ms")
            upsert = stmt.on_conflict_do_update(
                index_elements=[NodeReputationRow.peer_id],
                set_={name: stmt.excluded[name] for name in columns},
            )
            await conn.execute(
                upsert,
                [
                    {
                        "peer_id": r.peer_id,
                        "success": r.success,
                        "ttft_s": r.ttft_s,
                        "latency_s": r.latency_s,
                        "volume": r.volume,
                        "jobs": r.jobs,
                        "failures": r.failures,
                        "updated_ms": int(r.updated * 1000),
                    }
                    for r in records
                ],
            )


class ReputationKeeper:
    """Loads the book from the store, then keeps the store up to date."""

    def __init__(self, book: ReputationBook, store: ReputationStore, *, flush_s: float = FLUSH_S):
        self.book = book
        self.store = store
        self._loop = Periodic(
            "reputation-flush",
            self.flush,
            flush_s,
            log=log,
            failure="could not save reputation",  # retried at the next flush
            delay_first=True,
        )

    async def start(self) -> None:
        self.book.load(await self.store.load())
        self._loop.start()

    async def flush(self) -> None:
        await self.store.save(self.book.take_dirty())

    async def stop(self) -> None:
        await self._loop.stop()
        try:
            await self.flush()
        except Exception as exc:
            log.warning("could not save reputation at stop: %s", type(exc).__name__)
