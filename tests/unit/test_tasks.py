"""cancel_and_wait: stopping tasks without swallowing the caller's own cancellation."""

from __future__ import annotations

import asyncio

import pytest

from lichen.tasks import cancel_and_wait


async def _forever() -> None:
    await asyncio.Event().wait()


async def test_tasks_are_cancelled_and_their_errors_follow_quiet() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    done = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError):
        await cancel_and_wait(done)
    await cancel_and_wait(done, quiet=True)
    running = asyncio.create_task(_forever())
    await cancel_and_wait(running, None)
    assert running.cancelled()


async def test_the_callers_cancellation_is_not_swallowed() -> None:
    """A reconnect loop that stops its helper task on every round must still end when
    it is itself cancelled while waiting for that helper (the node that never exited)."""
    helper_waits = asyncio.Event()
    rounds = 0

    async def slow_to_stop() -> None:
        try:
            await _forever()
        except asyncio.CancelledError:
            helper_waits.set()
            await asyncio.sleep(0.05)  # cleanup that takes a moment
            raise

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            helper = asyncio.create_task(slow_to_stop())
            await asyncio.sleep(0)  # let it start
            await cancel_and_wait(helper)

    outer = asyncio.create_task(loop())
    await helper_waits.wait()  # the loop is now waiting for its helper to stop
    outer.cancel()
    done, _ = await asyncio.wait({outer}, timeout=10)  # with the bug, the loop ran on
    assert outer in done and outer.cancelled() and rounds == 1
