"""Rate limits and quotas, in process (default) or shared through Redis.

- :mod:`.base`: fixed windows and the :class:`Backend` protocol;
- :mod:`.memory`: :class:`MemoryBackend`, counters in this process;
- :mod:`.redis_store`: :class:`RedisBackend`, counters shared by many processes;
- :mod:`.outage`: what a limiter does while its store is down (fail open or closed);
- :mod:`.limiter`: :class:`RateLimiter`, requests/minute and tokens/day per subject,
  and plain event windows (sign-in attempts, form posts, node admissions).

Every per-subject limit of every process (gateway quotas, the form-post limit, the
tracker's admissions per IP) is a :class:`RateLimiter` over one of these backends,
so with ``redis_url`` set all replicas share one count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lichen.clock import Clock, system_clock
from lichen.ratelimit.base import Backend, Count, Window, bounded_key
from lichen.ratelimit.limiter import Limits, Quota, RateLimiter
from lichen.ratelimit.memory import MemoryBackend
from lichen.ratelimit.redis_store import RedisBackend

if TYPE_CHECKING:
    from lichen.config import Settings


def backend_for(redis_url: str | None, *, prefix: str = "lichen:rl:") -> Backend:
    """Redis when a URL is configured, else in-process counters."""
    if redis_url:
        return RedisBackend.from_url(redis_url, prefix=prefix)
    return MemoryBackend()


def limiter_for(
    settings: Settings, *, clock: Clock = system_clock, backend: Backend | None = None
) -> RateLimiter:
    """The limiter ``settings`` ask for: shared through ``redis_url`` when set, failing
    open or closed per ``limits_fail_closed``. The caller closes it (``aclose``)."""
    return RateLimiter(
        backend or backend_for(settings.redis_url),
        clock=clock,
        fail_closed=settings.limits_fail_closed,
    )


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
    "bounded_key",
    "limiter_for",
]
