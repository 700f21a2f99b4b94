"""Reputation: decaying success rate, latency and volume, and how the scheduler uses it."""

from __future__ import annotations

import pytest

from lichen.clock import ManualClock
from lichen.reputation.book import MIN_SCORE, ReputationBook
from lichen.routing.scheduler import Scheduler
from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry
from node_kit import offline_node


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def book(clock: ManualClock) -> ReputationBook:
    return ReputationBook(clock=clock, half_life_s=600, volume_half_life_s=3600)


def test_a_new_node_starts_below_a_proven_one(book: ReputationBook) -> None:
    for _ in range(20):
        book.job_succeeded("proven", 0.2)
        book.served("proven", tokens=500, latency_s=1.0)
    assert book.score("proven") > book.score("newcomer") > 0.5


def test_failures_lower_the_score_and_time_forgives_them(
    book: ReputationBook, clock: ManualClock
) -> None:
    start = book.score("n")
    for _ in range(5):
        book.job_failed("n")
    failed = book.score("n")
    assert failed < start / 2
    clock.advance(600)  # one half-life
    half = book.score("n")
    assert failed < half < start
    clock.advance(6000)
    assert book.score("n") == pytest.approx(start, rel=0.02)
    assert book.score("n") >= MIN_SCORE


def test_volume_decays_and_latency_is_averaged(book: ReputationBook, clock: ManualClock) -> None:
    book.served("n", tokens=1000, latency_s=2.0)
    book.served("n", tokens=1000, latency_s=4.0)
    record = book.get("n")
    assert record is not None
    assert record.volume == pytest.approx(2000)
    assert record.latency_s == pytest.approx(2.4)  # EWMA, alpha 0.2
    clock.advance(3600)
    book.served("n", tokens=0)
    assert record.volume == pytest.approx(1000, rel=0.01)


def test_ttft_is_an_ewma_and_counts_are_kept(book: ReputationBook) -> None:
    book.job_succeeded("n", 1.0)
    book.job_succeeded("n", 2.0)
    book.job_failed("n")
    assert book.ttft_s("n") == pytest.approx(1.2)
    record = book.get("n")
    assert record is not None and (record.jobs, record.failures) == (2, 1)
    assert book.ttft_s("unknown") is None


def test_changed_records_are_handed_out_once(book: ReputationBook) -> None:
    book.job_succeeded("a", None)
    book.job_failed("b")
    assert [r.peer_id for r in book.take_dirty()] == ["a", "b"]
    assert book.take_dirty() == []


def _node(name: str) -> NodeConnection:
    return offline_node(name, {"m": 4})


def test_the_scheduler_prefers_the_node_with_the_better_reputation(book: ReputationBook) -> None:
    good, flaky = _node("good"), _node("flaky")
    registry = Registry()
    for conn in (flaky, good):
        registry.add(conn)
    scheduler = Scheduler(registry, book)
    for _ in range(5):
        book.job_succeeded(good.peer_id, 0.3)
        book.job_succeeded(flaky.peer_id, 0.3)
        book.job_failed(flaky.peer_id)
    assert [c.name for c in scheduler.candidates("m")] == ["good", "flaky"]
