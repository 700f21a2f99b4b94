"""Rate limits and quotas, in process (default) or shared through Redis.

- :mod:`.base`: fixed windows and the :class:`Backend` protocol;
- :mod:`.memory`: :class:`MemoryBackend`, counters in this process;
- :mod:`.redis_store`: :class:`RedisBackend`, counters shared by many gateways;
- :mod:`.limiter`: :class:`RateLimiter`, requests/minute and tokens/day per subject.
"""

from __future__ import annotations

from lichen.ratelimit.base import Backend, Count, Window
from lichen.ratelimit.limiter import Limits, Quota, RateLimiter
from lichen.ratelimit.memory import MemoryBackend
from lichen.ratelimit.redis_store import RedisBackend


def backend_for(redis_url: str | None, *, prefix: str = "lichen:rl:") -> Backend:
    """Redis when a URL is configured, else in-process counters."""
    if redis_url:
        return RedisBackend.from_url(redis_url, prefix=prefix)
    return MemoryBackend()


__all__ = [
    "Backend",
    "Count",
    "Limits",
    "MemoryBackend",
    "Quota",
    "RateLimiter",
    "RedisBackend",
    "Window",
    "backend_for",
]
