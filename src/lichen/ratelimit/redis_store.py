"""Counters in Redis, shared by every gateway process that points at it.

Each take is one Lua script, which Redis runs atomically: read the counter,
decide, increment and set the expiry in one step, so concurrent gateways can
never both spend the last unit. Counters expire with their window; leases (requests
in flight) are a sorted set per subject scored by expiry, so a gateway that died
holding some stops counting once they expire. Counter names
are bounded in size (:func:`lichen.ratelimit.base.bounded_key`).

Connecting and each command time out after ``timeout_s`` (1 s by default): an
unreachable or hung Redis surfaces as an error to :class:`~.limiter.RateLimiter`,
which fails open or closed as configured, instead of stalling every request.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis

from lichen.ratelimit.base import Count, Window, bounded_key

TIMEOUT_S = 1.0  # connect and command timeout

# KEYS[1] counter; ARGV: cost, limit, ttl in ms, force ("1"/"0"). Returns {allowed, used}.
TAKE_SCRIPT = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if cost > 0 and ARGV[4] ~= '1' and used + cost > limit then
  return {0, used}
end
if cost > 0 then
  used = redis.call('INCRBY', KEYS[1], cost)
  if redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
end
return {1, used}
"""


# KEYS[1] a sorted set of leases (score: expiry in ms); ARGV: now ms, lease, limit, expiry ms,
# ttl ms. Returns {allowed, held}.
HOLD_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local held = redis.call('ZCARD', KEYS[1])
if held >= tonumber(ARGV[3]) then
  return {0, held}
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, held + 1}
"""


class RedisBackend:
    def __init__(self, client: redis.Redis, *, prefix: str = "lichen:rl:") -> None:
        self._client = client
        self._prefix = prefix
        self._script: Any = client.register_script(TAKE_SCRIPT)
        self._hold: Any = client.register_script(HOLD_SCRIPT)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "lichen:rl:", timeout_s: float = TIMEOUT_S
    ) -> RedisBackend:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        return cls(client, prefix=prefix)

    async def take(self, key: str, window: Window, cost: int, now: float, *, force: bool) -> Count:
        slot, reset_s = window.slot(key, now)
        ttl_ms = int(reset_s * 1000) + 1000  # a little past the window's end
        allowed, used = await self._script(
            keys=[self._prefix + slot],
            args=[cost, window.limit, ttl_ms, "1" if force else "0"],
        )
        return Count(bool(allowed), int(used), window.limit, reset_s)

    async def hold(self, key: str, lease: str, limit: int, now: float, ttl_s: float) -> Count:
        now_ms, ttl_ms = int(now * 1000), int(ttl_s * 1000)
        allowed, held = await self._hold(
            keys=[self._prefix + "lease:" + bounded_key(key)],
            args=[now_ms, lease, limit, now_ms + ttl_ms, ttl_ms],
        )
        return Count(bool(allowed), int(held), limit, ttl_s)

    async def drop(self, key: str, lease: str) -> None:
        await self._client.zrem(self._prefix + "lease:" + bounded_key(key), lease)

    async def aclose(self) -> None:
        await self._client.aclose()
