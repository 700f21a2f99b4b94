"""Running a role's event loop: uvloop where it is installed, asyncio's own otherwise.

A tracker spends most of its CPU in the event loop itself (one WebSocket frame per
heartbeat per node); uvloop's C implementation cuts that by about a third
(``bench/tracker_scale.py``). It is part of ``uvicorn[standard]`` on Linux and
macOS; elsewhere the standard loop is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the fastest available event loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
