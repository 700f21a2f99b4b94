"""lichen.periodic: the one loop behind every sweeper, flusher and watchdog."""

from __future__ import annotations

import asyncio
import logging

import pytest

from lichen.periodic import Periodic

log = logging.getLogger("test.periodic")


async def test_a_failing_step_is_logged_by_type_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0
    third = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            third.set()
        if calls == 1:
            raise ValueError("a secret message that must not be logged")

    loop = Periodic("t", step, 0.0, log=log, failure="the step failed")
    with caplog.at_level(logging.WARNING, logger="test.periodic"):
        loop.start()
        loop.start()  # a second start does not start a second loop
        await asyncio.wait_for(third.wait(), 30)
        await loop.stop()
    assert not loop.running
    assert caplog.messages == ["the step failed: ValueError"]


async def test_delay_first_waits_one_interval_before_the_first_step() -> None:
    ran = asyncio.Event()

    async def step() -> None:
        ran.set()

    loop = Periodic("t", step, 3600.0, log=log, failure="x", delay_first=True)
    loop.start()
    for _ in range(10):
        await asyncio.sleep(0)
    assert loop.running and not ran.is_set()
    await loop.stop()
    await loop.stop()  # stopping twice is fine


async def test_run_is_the_loop_in_the_callers_task() -> None:
    seen = asyncio.Event()

    async def step() -> None:
        seen.set()

    task = asyncio.create_task(Periodic("t", step, 0.0, log=log, failure="x").run())
    await asyncio.wait_for(seen.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
