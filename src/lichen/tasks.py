"""Stopping background tasks without swallowing the caller's own cancellation.

``task.cancel()`` followed by ``with suppress(CancelledError): await task`` has a
trap: if the *caller* is cancelled while it waits, its own CancelledError is
suppressed too, and a loop around it runs on (a node refused by its tracker kept
retrying its model-transfer link instead of exiting). :func:`cancel_and_wait`
re-raises in that case.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None, quiet: bool = False) -> None:
    """Cancel each task (``None`` is skipped) and wait until all have ended.

    A task's own exception propagates unless ``quiet``; a cancellation of the
    calling task always does.
    """
    waiting = [t for t in tasks if t is not None]
    for task in waiting:
        task.cancel()
    for task in waiting:
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception:
            if not quiet:
                raise
