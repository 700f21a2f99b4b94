"""A node takes at most its slots plus a small queue of jobs per model, then refuses."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from fakes import MODEL, FakeEngine, eventually

from lichen.errors import ErrorCode
from lichen.node.jobs import QUEUE_PER_SLOT, JobRunner
from lichen.wire.messages import (
    ChatMessage,
    GenerationRequest,
    JobError,
    JobStart,
    Message,
)


def _start(job_id: str, model: str = MODEL) -> JobStart:
    request = GenerationRequest(
        kind="chat", model=model, messages=[ChatMessage(role="user", content="x")]
    )
    return JobStart(job_id=job_id, request=request, deadline_ms=0, window=8)


async def test_jobs_past_slots_and_queue_are_refused_with_no_capacity() -> None:
    engine = FakeEngine(slots=2, fail_after=0, failure="stall")  # every job hangs
    runner = JobRunner(engine)
    sent: list[Message] = []

    async def send(msg: Message) -> None:
        sent.append(msg)

    capacity = runner.capacity(MODEL)
    assert capacity == 2 + 2 * QUEUE_PER_SLOT
    for i in range(capacity + 3):
        runner.start(_start(f"j{i}"), send)
    await eventually(lambda: len(sent) == 3, what="three refusals")
    assert all(isinstance(m, JobError) and m.code == ErrorCode.NO_CAPACITY.value for m in sent)
    assert {m.job_id for m in sent if isinstance(m, JobError)} == {
        f"j{i}" for i in range(capacity, capacity + 3)
    }
    assert len(runner.jobs) == capacity and runner.refused == 3
    runner.cancel_all()
    assert await runner.wait_idle(5.0)


async def test_a_freed_slot_takes_a_job_again() -> None:
    engine = FakeEngine(slots=1, fail_after=0, failure="stall")
    runner = JobRunner(engine, queue_limit=0)

    async def send(msg: Message) -> None:
        return None

    runner.start(_start("a"), send)
    runner.start(_start("b"), send)
    assert list(runner.jobs) == ["a"] and runner.refused == 1
    runner.cancel("a")  # before its task even started: it must not stay counted
    await eventually(lambda: not runner.jobs, what="the job to end")
    runner.start(_start("c"), send)
    assert list(runner.jobs) == ["c"]
    runner.cancel_all()
    await asyncio.wait_for(runner.wait_idle(), 5.0)
