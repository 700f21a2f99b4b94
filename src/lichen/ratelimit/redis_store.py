"""Counters in Redis, shared by every gateway process that points at it.

Each take is one Lua script, which Redis runs atomically: read the counter,
decide, increment and set the expiry in one step, so concurrent gateways can
never both spend the last unit. Counters expire with their window.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis

from lichen.ratelimit.base import Count, Window

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


class RedisBackend:
    def __init__(self, client: redis.Redis, *, prefix: str = "lichen:rl:") -> None:
        self._client = client
        self._prefix = prefix
        self._script: Any = client.register_script(TAKE_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "lichen:rl:") -> RedisBackend:
        return cls(redis.Redis.from_url(url), prefix=prefix)

    async def take(self, key: str, window: Window, cost: int, now: float, *, force: bool) -> Count:
        slot, reset_s = window.slot(key, now)
        ttl_ms = int(reset_s * 1000) + 1000  # a little past the window's end
        allowed, used = await self._script(
            keys=[self._prefix + slot],
            args=[cost, window.limit, ttl_ms, "1" if force else "0"],
        )
        return Count(bool(allowed), int(used), window.limit, reset_s)

    async def aclose(self) -> None:
        await self._client.aclose()
