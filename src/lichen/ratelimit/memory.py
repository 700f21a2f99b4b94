"""In-process counters: the default backend for a single gateway or tracker process.

Memory is bounded: expired windows are swept every :data:`PRUNE_EVERY` calls, and
past ``max_keys`` live counters the oldest one is dropped (its subject starts a
fresh window: a flood of distinct subjects costs the flooder its own limits, never
the process its memory).
"""

from __future__ import annotations

from collections import OrderedDict

from lichen.ratelimit.base import Count, Window, bounded_key

PRUNE_EVERY = 1024  # calls between sweeps of expired windows
MAX_KEYS = 200_000  # live counters kept at most (about 30 MB)


class MemoryBackend:
    def __init__(self, *, max_keys: int = MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        # slot -> (expires at, used), oldest first
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._leases: OrderedDict[str, dict[str, float]] = OrderedDict()  # key -> lease -> expiry
        self._calls = 0

    def __len__(self) -> int:
        """Counters and lease sets held now (expired ones included until the next sweep)."""
        return len(self._counts) + len(self._leases)

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
            if slot not in self._counts:
                while len(self._counts) >= self.max_keys:
                    self._counts.popitem(last=False)
            self._counts[slot] = (now + reset_s, used)
        return Count(True, used, window.limit, reset_s)

    async def hold(self, key: str, lease: str, limit: int, now: float, ttl_s: float) -> Count:
        name = bounded_key(key)
        held = {k: t for k, t in self._leases.get(name, {}).items() if t > now}
        if len(held) >= limit:
            if held:
                self._leases[name] = held
            return Count(False, len(held), limit, ttl_s)
        held[lease] = now + ttl_s
        if name not in self._leases:
            while len(self._leases) >= self.max_keys:
                self._leases.popitem(last=False)
        self._leases[name] = held
        return Count(True, len(held), limit, ttl_s)

    async def drop(self, key: str, lease: str) -> None:
        name = bounded_key(key)
        held = self._leases.get(name)
        if held is not None:
            held.pop(lease, None)
            if not held:
                del self._leases[name]

    def _prune(self, now: float) -> None:
        for slot in [s for s, (expires, _) in self._counts.items() if expires <= now]:
            del self._counts[slot]
        for name in [
            k for k, held in self._leases.items() if not held or max(held.values()) <= now
        ]:
            del self._leases[name]

    async def aclose(self) -> None:
        self._counts.clear()
        self._leases.clear()
