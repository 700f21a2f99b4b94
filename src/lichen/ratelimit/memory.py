"""In-process counters: the default backend for a single gateway process."""

from __future__ import annotations

from lichen.ratelimit.base import Count, Window

PRUNE_EVERY = 1024  # calls between sweeps of expired windows


class MemoryBackend:
    def __init__(self) -> None:
        self._counts: dict[str, tuple[float, int]] = {}  # slot -> (expires at, used)
        self._calls = 0

    async def take(self, key: str, window: Window, cost: int, now: float, *, force: bool) -> Count:
        # No await in here: under asyncio this read-modify-write is atomic.
        self._calls += 1
        if self._calls % PRUNE_EVERY == 0:
            self._prune(now)
        slot, reset_s = window.slot(key, now)
        used = self._counts.get(slot, (0.0, 0))[1]
        if cost > 0 and not force and used + cost > window.limit:
            return Count(False, used, window.limit, reset_s)
        if cost > 0:
            used += cost
            self._counts[slot] = (now + reset_s, used)
        return Count(True, used, window.limit, reset_s)

    def _prune(self, now: float) -> None:
        for slot in [s for s, (expires, _) in self._counts.items() if expires <= now]:
            del self._counts[slot]

    async def aclose(self) -> None:
        self._counts.clear()
