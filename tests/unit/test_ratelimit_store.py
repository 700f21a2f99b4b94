"""The rate-limit store's edges: bounded counter names and memory, and what a limiter does
while its store fails (fail open by default, fail closed when asked; logged once per
period, not per request)."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from lichen.clock import ManualClock
from lichen.config import Settings
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.concurrency import ConcurrencyLimiter
from lichen.ratelimit import (
    Count,
    Limits,
    MemoryBackend,
    RateLimiter,
    Window,
    bounded_key,
    limiter_for,
)
from lichen.ratelimit.base import MAX_KEY_CHARS

START = 1_700_000_020.0  # 40 s into a minute


class FlakyBackend:
    """Counters in memory that fail like an unreachable Redis while ``down``."""

    def __init__(self) -> None:
        self.inner = MemoryBackend()
        self.down = False
        self.calls = 0

    async def take(self, key: str, window: Window, cost: int, now: float, *, force: bool) -> Count:
        self._call()
        return await self.inner.take(key, window, cost, now, force=force)

    async def hold(self, key: str, lease: str, limit: int, now: float, ttl_s: float) -> Count:
        self._call()
        return await self.inner.hold(key, lease, limit, now, ttl_s)

    async def drop(self, key: str, lease: str) -> None:
        self._call()
        await self.inner.drop(key, lease)

    def _call(self) -> None:
        self.calls += 1
        if self.down:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    async def aclose(self) -> None:
        await self.inner.aclose()


def _outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lichen.ratelimit.outage"]


@pytest.mark.parametrize(
    "key",
    ["k" * 10_000, "key:" + "é" * 200, "ip:\n\x00evil", "x" * (MAX_KEY_CHARS + 1), "\ud800"],
)
def test_long_or_odd_subjects_get_bounded_counter_names(key: str) -> None:
    bounded = bounded_key(key)
    assert len(bounded) <= MAX_KEY_CHARS and bounded.isascii() and bounded.isprintable()
    assert bounded == bounded_key(key)  # stable: the same subject keeps one counter
    assert bounded != bounded_key(key + "x")
    slot, _ = Window(5, 60).slot(key, START)
    assert len(slot) < MAX_KEY_CHARS + 32


def test_ordinary_subjects_keep_their_names() -> None:
    assert bounded_key("key:0123abcd") == "key:0123abcd"
    assert Window(5, 60).slot("req:key:1", START)[0] == f"req:key:1:60:{int(START // 60)}"


async def test_memory_backend_stays_bounded_under_a_flood_of_subjects() -> None:
    backend = MemoryBackend(max_keys=100)
    limiter = RateLimiter(backend, clock=ManualClock(START))
    limits = Limits(requests_per_minute=2, tokens_per_day=0)
    for i in range(5_000):
        await limiter.admit(f"ip:{i}", limits)
    assert len(backend) == 100
    await limiter.admit("ip:victim", limits)
    await limiter.admit("ip:victim", limits)
    with pytest.raises(LichenError):  # recent subjects are still limited
        await limiter.admit("ip:victim", limits)


async def test_fail_open_serves_and_logs_the_outage_once_per_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    clock = ManualClock(START)
    backend = FlakyBackend()
    limiter = RateLimiter(backend, clock=clock)
    limits = Limits(requests_per_minute=1, tokens_per_day=10)
    backend.down = True
    for _ in range(50):
        quota = await limiter.admit("key:a", limits)
        assert quota.requests is None and quota.tokens is None  # served, not limited
    assert backend.calls == 1  # the breaker spared the dead store 49 attempts
    assert len(_outage_lines(caplog)) == 1
    assert "not limiting" in _outage_lines(caplog)[0]
    clock.advance(61)  # past the log period and the retry delay: one more attempt
    for _ in range(10):
        await limiter.admit("key:a", limits)
    assert backend.calls == 2
    lines = _outage_lines(caplog)
    assert len(lines) == 2 and "still unavailable" in lines[1] and "101 checks" in lines[1]
    clock.advance(3)
    backend.down = False
    await limiter.admit("key:a", limits)  # the store answers again: limits apply again
    assert "reachable again" in _outage_lines(caplog)[-1]
    with pytest.raises(LichenError) as info:
        await limiter.admit("key:a", limits)
    assert info.value.code is ErrorCode.RATE_LIMITED
    assert len(_outage_lines(caplog)) == 3


async def test_fail_closed_refuses_with_a_typed_503_until_the_store_answers() -> None:
    clock = ManualClock(START)
    backend = FlakyBackend()
    limiter = RateLimiter(backend, clock=clock, fail_closed=True)
    limits = Limits(requests_per_minute=5, tokens_per_day=100)
    backend.down = True
    for attempt in range(3):
        with pytest.raises(LichenError) as info:
            await limiter.admit("key:a", limits)
        error = info.value
        assert error.code is ErrorCode.SERVICE_UNAVAILABLE and error.http_status == 503, attempt
        assert error.headers["Retry-After"] == "2"
        assert error.openai_body()["error"]["type"] == "service_unavailable_error"
    with pytest.raises(LichenError):
        await limiter.hit("auth:tag", Window(10, 60))  # sign-in attempts too
    with pytest.raises(LichenError):
        await limiter.charge("key:a", limits, 2, "a large schema")
    # Tokens of an answer already served are never refused (nothing left to refuse).
    await limiter.count_tokens("key:a", limits, 50)
    clock.advance(2)
    backend.down = False
    quota = await limiter.admit("key:a", limits)
    assert quota.requests is not None and quota.requests.used == 1


async def test_unlimited_windows_never_touch_the_store() -> None:
    backend = FlakyBackend()
    backend.down = True
    limiter = RateLimiter(backend, fail_closed=True)
    assert await limiter.admit("key:a", Limits(0, 0)) is not None
    assert await limiter.take("evt", Window(0, 60)) is None
    assert backend.calls == 0


def test_settings_choose_fail_open_or_closed() -> None:
    assert not limiter_for(Settings()).fail_closed
    assert limiter_for(Settings(limits_fail_closed=True)).fail_closed
    assert isinstance(limiter_for(Settings()).backend, MemoryBackend)


@pytest.mark.parametrize("fail_closed", [False, True])
async def test_shared_in_flight_leases_follow_the_outage_policy(fail_closed: bool) -> None:
    backend = FlakyBackend()
    concurrency = ConcurrencyLimiter(
        RateLimiter(backend, clock=ManualClock(START), fail_closed=fail_closed)
    )
    backend.down = True
    if fail_closed:
        with pytest.raises(LichenError) as info:
            await concurrency.enter("key:k", 1)
        assert info.value.code is ErrorCode.SERVICE_UNAVAILABLE
        assert concurrency.in_flight() == 0  # nothing held for a refused request
        return
    assert await concurrency.enter("key:k", 1) is None  # admitted, no shared lease
    with pytest.raises(LichenError):  # the per-process cap still holds
        await concurrency.enter("key:k", 1)
    await concurrency.leave("key:k", None)
    assert concurrency.in_flight() == 0
