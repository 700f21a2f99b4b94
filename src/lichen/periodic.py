"""One background task that does something every few seconds, until stopped.

Sweepers, flushers and releasers all share this loop instead of each writing its own
start/stop: a step that fails is logged (its exception's type only, never its
message, which may carry request data) and retried at the next round; ``stop``
cancels the task and waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from lichen.tasks import cancel_and_wait


class Periodic:
    """Run ``step`` every ``every_s`` seconds (first at once, or after one interval)."""

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        every_s: float,
        *,
        log: logging.Logger,
        failure: str,
        delay_first: bool = False,
    ) -> None:
        self.name = name
        self.every_s = every_s
        self._step = step
        self._log = log
        self._failure = failure  # "retention sweep failed": logged as "<failure>: <type>"
        self._delay_first = delay_first
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop (a second call while it runs does nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait until it has ended."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def run(self) -> None:
        """The loop itself, in the caller's task (until cancelled); ``start`` runs it in
        a task of its own."""
        if self._delay_first:
            await asyncio.sleep(self.every_s)
        while True:
            try:
                await self._step()
            except Exception as exc:  # retried at the next round
                self._log.warning("%s: %s", self._failure, type(exc).__name__)
            await asyncio.sleep(self.every_s)
