"""Fixed-window counters and expiring leases: what every rate-limit backend implements.

A window of ``period_s`` seconds is identified by ``floor(now / period_s)``, so
every process (and every gateway sharing a Redis) agrees on when it starts and
ends without talking to each other; the daily window ends at UTC midnight.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Protocol

MAX_KEY_CHARS = 128  # longer subjects are stored under their hash (bounded Redis keys)


def bounded_key(key: str) -> str:
    """``key`` itself, or a fixed-size digest of it when it is long or not printable ASCII,
    so no subject can make a counter name (a Redis key, a dict key) of unbounded size."""
    if len(key) <= MAX_KEY_CHARS and key.isascii() and key.isprintable():
        return key
    return "h:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Window:
    limit: int  # units allowed per period; 0 = unlimited
    period_s: int

    def slot(self, key: str, now: float) -> tuple[str, float]:
        """(counter name for the current window, seconds until it resets); the name's
        length is bounded whatever ``key`` is (:func:`bounded_key`)."""
        index = math.floor(now / self.period_s)
        return f"{bounded_key(key)}:{self.period_s}:{index}", (index + 1) * self.period_s - now


@dataclass(frozen=True, slots=True)
class Count:
    allowed: bool  # False: counting ``cost`` would have exceeded the limit (nothing counted)
    used: int  # units counted in this window
    limit: int
    reset_s: float  # seconds until this window resets

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.reset_s))


class Backend(Protocol):
    """Where counters live: this process (:mod:`.memory`) or Redis (:mod:`.redis_store`)."""

    async def take(self, key: str, window: Window, cost: int, now: float, *, force: bool) -> Count:
        """Count ``cost`` units in the current window of ``key``, atomically.

        Without ``force``, units that would exceed ``window.limit`` are not counted
        and the answer is ``allowed=False``; with ``force`` they are always counted
        (tokens, known only after the answer). ``cost=0`` only reads.
        """
        ...

    async def hold(self, key: str, lease: str, limit: int, now: float, ttl_s: float) -> Count:
        """Hold ``lease``, one of at most ``limit`` concurrent leases on ``key``, atomically.

        Leases past their ``ttl_s`` no longer count (a process that died holding one
        does not block its subject for ever). ``allowed=False``: ``limit`` leases are
        held already and nothing was added; ``used``: leases held after the call.
        """
        ...

    async def drop(self, key: str, lease: str) -> None:
        """Give ``lease`` back (nothing happens if it expired or was never held)."""
        ...

    async def aclose(self) -> None: ...
