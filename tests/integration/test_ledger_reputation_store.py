"""Reputation survives a restart: persisted on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.clock import ManualClock
from lichen.reputation import ReputationBook, ReputationKeeper, ReputationStore


async def test_reputation_is_saved_and_loaded_with_its_decay(lichen_db: AsyncEngine) -> None:
    clock = ManualClock()
    book = ReputationBook(clock=clock)
    keeper = ReputationKeeper(book, ReputationStore(lichen_db), flush_s=3600)
    await keeper.start()
    for _ in range(3):
        book.job_failed("flaky")
        book.job_succeeded("steady", 0.25)
        book.served("steady", tokens=400, latency_s=1.5)
    book.job_succeeded("flaky", 0.5)
    scores = {p: book.score(p) for p in ("flaky", "steady")}
    await keeper.stop()  # flushes

    restarted = ReputationBook(clock=clock)
    restarted.load(await ReputationStore(lichen_db).load())
    for peer, score in scores.items():
        assert restarted.score(peer) == pytest.approx(score)
    steady = restarted.get("steady")
    assert steady is not None
    assert (steady.jobs, steady.failures) == (3, 0)
    assert steady.ttft_s == pytest.approx(0.25) and steady.volume == pytest.approx(1200)
    clock.advance(7200)  # hours later, old failures are forgiven
    assert restarted.score("flaky") > scores["flaky"]


async def test_saving_updates_rows_in_place(lichen_db: AsyncEngine) -> None:
    store = ReputationStore(lichen_db)
    book = ReputationBook(clock=ManualClock())
    book.job_succeeded("a", 0.1)
    await store.save(book.take_dirty())
    book.job_failed("a")
    await store.save(book.take_dirty())
    rows = await store.load()
    assert [(r.peer_id, r.jobs, r.failures) for r in rows] == [("a", 1, 1)]
