"""Rate limits and quotas: in-process and Redis backends; two gateways sharing one Redis
enforce one limit between them (each with its own limiter object and connection)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts_kit import account_app, csrf, make_accounting, signup
from lichen.clock import ManualClock
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.services import GatewayServices
from lichen.ratelimit import Backend, Limits, MemoryBackend, RateLimiter, RedisBackend, Window

START = 1_700_000_020.0  # 40 s into a minute, hours from midnight UTC


def _redis(url: str, prefix: str) -> RedisBackend:
    return RedisBackend.from_url(url, prefix=prefix)


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


@pytest.fixture(params=["memory", "redis"])
async def backends(
    request: pytest.FixtureRequest, prefix: str
) -> AsyncIterator[tuple[Backend, Backend]]:
    """Two backend objects that share state: one object in memory, two clients on Redis."""
    if request.param == "memory":
        shared = MemoryBackend()
        yield shared, shared
        return
    url: str = request.getfixturevalue("redis_url")
    first, second = _redis(url, prefix), _redis(url, prefix)
    yield first, second
    await first.aclose()
    await second.aclose()


async def test_concurrent_takes_never_exceed_the_limit(
    backends: tuple[Backend, Backend],
) -> None:
    first, second = backends
    window = Window(limit=10, period_s=60)
    results = await asyncio.gather(
        *((first if i % 2 else second).take("k", window, 1, START, force=False) for i in range(50))
    )
    assert sum(r.allowed for r in results) == 10
    after = await first.take("k", window, 0, START, force=False)
    assert after.used == 10 and after.remaining == 0
    assert 0 < after.reset_s <= 60


async def test_denied_units_are_not_counted_and_forced_ones_are(
    backends: tuple[Backend, Backend],
) -> None:
    backend = backends[0]
    window = Window(limit=100, period_s=86_400)
    assert (await backend.take("t", window, 90, START, force=False)).allowed
    denied = await backend.take("t", window, 20, START, force=False)
    assert not denied.allowed and denied.used == 90
    forced = await backend.take("t", window, 20, START, force=True)
    assert forced.allowed and forced.used == 110
    nextday = await backend.take("t", window, 0, START + 86_400, force=False)
    assert nextday.used == 0


async def test_limiter_refuses_with_retry_after_and_headers() -> None:
    clock = ManualClock(START)
    limiter = RateLimiter(MemoryBackend(), clock=clock)
    limits = Limits(requests_per_minute=2, tokens_per_day=0)
    first = await limiter.admit("key:a", limits)
    assert first.headers()["X-RateLimit-Remaining"] == "1"
    await limiter.admit("key:a", limits)
    with pytest.raises(LichenError) as info:
        await limiter.admit("key:a", limits)
    error = info.value
    assert error.code is ErrorCode.RATE_LIMITED and error.http_status == 429
    assert error.headers["Retry-After"] == "20"  # the minute window ends 20 s from START
    assert error.headers["X-RateLimit-Limit"] == "2"
    assert error.headers["X-RateLimit-Remaining"] == "0"
    assert error.headers["X-RateLimit-Reset"] == "20"
    await limiter.admit("key:b", limits)  # other subjects are unaffected
    clock.advance(20)
    await limiter.admit("key:a", limits)  # a new window


async def test_an_unreachable_redis_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(RedisBackend.from_url("redis://127.0.0.1:1/0"))
    quota = await limiter.admit("key:a", Limits(1, 1))
    assert quota.requests is None  # not limited, but not down either
    assert "rate-limit store unavailable" in caplog.text
    await limiter.aclose()


# --- through the gateway ------------------------------------------------------------------


async def _keyed(acc: GatewayServices) -> str:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=account_app(acc)), base_url="https://testserver"
    ) as http:
        body = await signup(http)
        created = await http.post("/v1/account/keys", json={}, headers=csrf(body))
        key: str = created.json()["key"]
        return key


def _gateway(acc: GatewayServices, client_ip: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=account_app(acc), client=(client_ip, 1234))
    return httpx.AsyncClient(transport=transport, base_url="https://testserver")


async def _two_gateways(
    lichen_db: AsyncEngine, redis_url: str, prefix: str, **settings: Any
) -> tuple[GatewayServices, GatewayServices]:
    clock = ManualClock(START)
    return (
        make_accounting(lichen_db, clock=clock, backend=_redis(redis_url, prefix), **settings),
        make_accounting(lichen_db, clock=clock, backend=_redis(redis_url, prefix), **settings),
    )


async def test_two_gateways_sharing_redis_enforce_one_request_limit(
    lichen_db: AsyncEngine, redis_url: str, prefix: str
) -> None:
    a, b = await _two_gateways(lichen_db, redis_url, prefix, key_requests_per_minute=5)
    assert a.limiter is not b.limiter and a.limiter.backend is not b.limiter.backend
    key = await _keyed(a)
    auth = {"authorization": f"Bearer {key}"}
    answers: list[httpx.Response] = []
    async with _gateway(a) as gw_a, _gateway(b) as gw_b:
        for i in range(8):
            answers.append(
                await (gw_a if i % 2 == 0 else gw_b).post(
                    "/v1/chat/completions", json={}, headers=auth
                )
            )
    assert [r.status_code for r in answers] == [200] * 5 + [429] * 3
    assert [r.headers["x-ratelimit-remaining"] for r in answers[:5]] == ["4", "3", "2", "1", "0"]
    assert all(r.headers["x-ratelimit-limit"] == "5" for r in answers)
    refused = answers[5]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["retry-after"] == "20"
    await a.limiter.aclose()
    await b.limiter.aclose()


async def test_two_gateways_sharing_redis_enforce_one_daily_token_quota(
    lichen_db: AsyncEngine, redis_url: str, prefix: str
) -> None:
    a, b = await _two_gateways(lichen_db, redis_url, prefix, key_tokens_per_day=25)
    key = await _keyed(a)
    auth = {"authorization": f"Bearer {key}"}
    async with _gateway(a) as gw_a, _gateway(b) as gw_b:
        codes = [
            (await gw.post("/v1/chat/completions", json={}, headers=auth)).status_code
            for gw in (gw_a, gw_b, gw_a)
        ]
        assert codes == [200, 200, 200]  # 30 tokens used: the quota is now spent
        refused = await gw_b.post("/v1/chat/completions", json={}, headers=auth)
    assert refused.status_code == 429
    assert "token quota" in refused.json()["error"]["message"]
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(refused.headers["retry-after"]) == 86_400 - int(START % 86_400)
    await a.limiter.aclose()
    await b.limiter.aclose()


async def test_anonymous_use_is_limited_per_address(lichen_db: AsyncEngine) -> None:
    acc = make_accounting(lichen_db, clock=ManualClock(START), anonymous_requests_per_minute=3)
    async with _gateway(acc, "198.51.100.1") as first, _gateway(acc, "198.51.100.2") as second:
        codes = [(await first.post("/v1/chat/completions", json={})).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert (await second.post("/v1/chat/completions", json={})).status_code == 200
        subject = (await second.post("/v1/chat/completions", json={})).json()["subject"]
    assert subject.startswith("ip:") and "198.51" not in subject  # the address is not kept


async def test_loopback_clients_are_limited_only_when_asked(lichen_db: AsyncEngine) -> None:
    """`lichen up` on a laptop: the machine's own use is not throttled, unless a reverse
    proxy on the host makes every public client look local (``limit_loopback``)."""
    for limit_loopback, expected in ((False, [200] * 4), (True, [200, 200, 429, 429])):
        acc = make_accounting(
            lichen_db,
            clock=ManualClock(START),
            anonymous_requests_per_minute=2,
            limit_loopback=limit_loopback,
        )
        async with _gateway(acc, "127.0.0.1") as local:
            codes = [
                (await local.post("/v1/chat/completions", json={})).status_code for _ in range(4)
            ]
        assert codes == expected, limit_loopback
