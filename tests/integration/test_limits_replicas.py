"""Limits shared by replicas through one real Redis, and what happens when Redis is gone.

Each "replica" here is its own object graph with its own Redis connection (two
gateways' services, two trackers' admissions, two apps' form-post middleware);
they share nothing but the Redis server. An unreachable Redis is a closed loopback
port: the default (fail open) keeps serving; ``limits_fail_closed`` refuses with a
typed 503 in each API dialect's error shape.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts_kit import PASSWORD, account_app, make_accounting, signup
from lichen.clock import ManualClock, now_ms
from lichen.config import Settings
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.app import GatewayDeps, create_app
from lichen.gateway.body_limit import BodyLimitMiddleware, BodyLimits
from lichen.gateway.completions import CompletionService
from lichen.gateway.dialects.anthropic_messages import AnthropicRoute
from lichen.gateway.dialects.ollama import OllamaRoute
from lichen.gateway.dialects.openai import OpenAIRoute
from lichen.gateway.dialects.route import DialectRoute, dialect_router
from lichen.gateway.guard import current_ticket
from lichen.gateway.services import GatewayServices
from lichen.http.errors import install_error_handlers
from lichen.identity.certs import DeviceCertificate, issue_device_certificate
from lichen.identity.certs import verify_device_certificate as verify_cert
from lichen.identity.signing import generate_key, public_raw
from lichen.ratelimit import Limits, RateLimiter, RedisBackend, Window
from lichen.routing.router import Router
from lichen.routing.scheduler import Scheduler
from lichen.storage.membership import MembershipRepository
from lichen.tracker.membership import AdmissionLimiter, InviteAdmission
from lichen.tracker.registry import Registry
from ports import free_port

START = 1_700_000_020.0  # 40 s into a minute, hours from midnight UTC
CLIENT = ("203.0.113.7", 1234)  # not loopback: anonymous limits apply


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


@pytest.fixture
def dead_redis_url() -> str:
    """A Redis URL nothing listens on (connection refused at once)."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
async def redis_keys(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _http(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=CLIENT)
    return httpx.AsyncClient(transport=transport, base_url="https://testserver")


# --- quotas and weights across two gateways ------------------------------------------------


async def test_grammar_weight_charges_count_on_every_gateway(redis_url: str, prefix: str) -> None:
    clock = ManualClock(START)
    a = RateLimiter(RedisBackend.from_url(redis_url, prefix=prefix), clock=clock)
    b = RateLimiter(RedisBackend.from_url(redis_url, prefix=prefix), clock=clock)
    limits = Limits(requests_per_minute=5, tokens_per_day=0)
    try:
        await a.admit("key:k", limits)
        await b.charge("key:k", limits, 3, "a 7 KiB schema")  # one request weighs 4
        quota = await a.admit("key:k", limits)
        assert quota.requests is not None and quota.requests.remaining == 0
        with pytest.raises(LichenError) as info:
            await b.admit("key:k", limits)
        assert info.value.code is ErrorCode.RATE_LIMITED
    finally:
        await a.aclose()
        await b.aclose()


async def test_requests_in_flight_are_capped_across_gateways(
    lichen_db: AsyncEngine, redis_url: str, prefix: str, redis_keys: redis.Redis
) -> None:
    """``key_concurrent_requests=1``: a request held open on one gateway makes the other
    refuse a second one (429); once it ends, the other serves."""
    clock = ManualClock(START)
    a, b = (
        make_accounting(
            lichen_db,
            clock=clock,
            backend=RedisBackend.from_url(redis_url, prefix=prefix),
            anonymous_concurrent_requests=1,
        )
        for _ in range(2)
    )
    assert a.guard.concurrency.shared is a.limiter
    release = asyncio.Event()
    entered = asyncio.Event()
    try:
        app_a, app_b = _dialect_app(a, release, entered), _dialect_app(b, release, entered)
        async with _http(app_a) as gw_a, _http(app_b) as gw_b:
            held = asyncio.create_task(gw_a.post("/v1/slow", json={}))
            await asyncio.wait_for(entered.wait(), 30)  # in flight on gateway a
            refused = await gw_b.post("/v1/slow", json={})
            release.set()
            assert (await held).status_code == 200
            served = await gw_b.post("/v1/slow", json={})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert "in flight" in refused.json()["error"]["message"]
        assert served.status_code == 200
        assert [k async for k in redis_keys.scan_iter(match=f"{prefix}lease:*")] == []
    finally:
        await a.limiter.aclose()
        await b.limiter.aclose()


# --- node admissions across two trackers ---------------------------------------------------


def _device() -> DeviceCertificate:
    raw = issue_device_certificate(
        generate_key(), public_raw(generate_key()), name="n", now_ms=now_ms()
    )
    return verify_cert(raw, now_ms=now_ms())


async def test_admissions_per_ip_are_shared_by_trackers(
    lichen_db: AsyncEngine, redis_url: str, redis_keys: redis.Redis
) -> None:
    """Two trackers of one public network (one database, one Redis): at most
    ``admissions_per_ip_hour`` new devices per IP between them."""
    network = generate_key()
    settings = Settings(redis_url=redis_url, admissions_per_ip_hour=2)
    members = MembershipRepository(lichen_db)
    clock = ManualClock(START)
    limiters = [AdmissionLimiter.from_settings(settings, network, clock=clock) for _ in range(2)]
    first, second = (
        InviteAdmission(members, network_key=public_raw(network), mode="public", limiter=lim)
        for lim in limiters
    )
    try:
        assert await first.admit(_device(), "", "198.51.100.9:4000") == "community"
        assert await second.admit(_device(), "", "198.51.100.9:4001") == "community"
        with pytest.raises(LichenError) as info:
            await first.admit(_device(), "", "198.51.100.9:4002")
        assert info.value.code is ErrorCode.RATE_LIMITED
        assert int(info.value.headers["Retry-After"]) >= 1
        with pytest.raises(LichenError):
            await second.admit(_device(), "", "198.51.100.9:4003")
        assert await second.admit(_device(), "", "198.51.100.10:4000") == "community"
        assert len(await members.members()) == 3  # refused devices were not recorded
        subject = limiters[0].subject("198.51.100.9")
        stored = [k async for k in redis_keys.scan_iter(match=f"*{subject}*")]
        assert stored, "the admission count lives in Redis"
        admissions = b" ".join([k async for k in redis_keys.scan_iter(match="*adm:*")])
        assert b"198.51.100" not in admissions  # addresses are counted under a keyed hash
    finally:
        for limiter in limiters:
            await limiter.aclose()


@pytest.mark.parametrize("fail_closed", [False, True])
async def test_admissions_when_redis_is_unreachable(
    lichen_db: AsyncEngine, dead_redis_url: str, fail_closed: bool
) -> None:
    network = generate_key()
    settings = Settings(redis_url=dead_redis_url, limits_fail_closed=fail_closed)
    limiter = AdmissionLimiter.from_settings(settings, network)
    members = MembershipRepository(lichen_db)
    admission = InviteAdmission(
        members, network_key=public_raw(network), mode="public", limiter=limiter
    )
    try:
        if not fail_closed:
            assert await admission.admit(_device(), "", "198.51.100.9:1") == "community"
            return
        with pytest.raises(LichenError) as info:
            await admission.admit(_device(), "", "198.51.100.9:1")
        assert info.value.code is ErrorCode.SERVICE_UNAVAILABLE  # a node retries this
        assert await members.members() == []
    finally:
        await limiter.aclose()


# --- gateways when Redis is unreachable ----------------------------------------------------


def _dialect_app(
    acc: GatewayServices,
    release: asyncio.Event | None = None,
    entered: asyncio.Event | None = None,
) -> FastAPI:
    """The accounting routes plus one guarded route per dialect (OpenAI, Anthropic, Ollama),
    and ``/v1/slow``, which answers once ``release`` is set (``entered`` says it began)."""
    app = account_app(acc)

    async def answer(request: Request) -> JSONResponse:
        assert current_ticket() is not None
        return JSONResponse({"ok": True})

    async def slow(request: Request) -> JSONResponse:
        if entered is not None:
            entered.set()
        if release is not None:
            await release.wait()
        return JSONResponse({"ok": True})

    routes: tuple[tuple[type[DialectRoute], str, Any], ...] = (
        (AnthropicRoute, "/v1/messages", answer),
        (OllamaRoute, "/api/chat", answer),
        (OpenAIRoute, "/v1/slow", slow),
    )
    for route_class, path, handler in routes:
        router = dialect_router(route_class)
        router.add_api_route(path, handler, methods=["POST"])
        app.include_router(router)
    return app


async def test_fail_open_is_the_default_and_keeps_serving(
    lichen_db: AsyncEngine, dead_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    acc = make_accounting(
        lichen_db,
        clock=ManualClock(START),
        redis_url=dead_redis_url,
        anonymous_requests_per_minute=1,
    )
    assert not acc.limiter.fail_closed
    async with _http(_dialect_app(acc)) as http:
        codes = [(await http.post("/v1/chat/completions", json={})).status_code for _ in range(5)]
        await signup(http)  # sign-in attempts are not limited either (201)
    assert codes == [200] * 5  # past the limit of 1: not limited while Redis is away
    outage = [r for r in caplog.records if r.name == "lichen.ratelimit.outage"]
    assert len(outage) == 1 and "not limiting" in outage[0].getMessage()  # once, not per request
    await acc.limiter.aclose()


async def test_fail_closed_refuses_with_a_typed_503_in_each_dialect(
    lichen_db: AsyncEngine, dead_redis_url: str
) -> None:
    acc = make_accounting(
        lichen_db, clock=ManualClock(START), redis_url=dead_redis_url, limits_fail_closed=True
    )
    assert acc.limiter.fail_closed
    async with _http(_dialect_app(acc)) as http:
        openai = await http.post("/v1/chat/completions", json={})
        anthropic = await http.post("/v1/messages", json={})
        ollama = await http.post("/api/chat", json={})
        refused = await http.post(
            "/v1/auth/signup",
            json={"username": "ann", "email": "ann@example.org", "password": PASSWORD},
        )
    for response in (openai, anthropic, ollama, refused):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "2"
    error = openai.json()["error"]
    assert error["code"] == "service_unavailable" and error["type"] == "service_unavailable_error"
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "overloaded_error"
    assert "rate limits cannot be checked" in ollama.json()["error"]
    assert refused.json()["error"]["code"] == "service_unavailable"  # sign-in attempts too
    await acc.limiter.aclose()


@pytest.fixture
async def hung_redis_url() -> AsyncIterator[str]:
    """A server that accepts connections and reads, but never answers (a hung Redis)."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("fail_closed", [False, True])
async def test_a_hung_redis_times_out_instead_of_holding_requests(
    hung_redis_url: str, fail_closed: bool
) -> None:
    clock = ManualClock(START)
    backend = RedisBackend.from_url(hung_redis_url, timeout_s=0.2)
    limiter = RateLimiter(backend, clock=clock, fail_closed=fail_closed)
    limits = Limits(requests_per_minute=1, tokens_per_day=0)
    try:
        for _ in range(3):  # the breaker answers the next ones without waiting again
            admitted = limiter.admit("key:k", limits)
            if fail_closed:
                with pytest.raises(LichenError) as info:
                    await asyncio.wait_for(admitted, 30)
                assert info.value.code is ErrorCode.SERVICE_UNAVAILABLE
            else:
                assert (await asyncio.wait_for(admitted, 30)).requests is None
        assert limiter.outage.since == START and limiter.outage.total_skipped == 3
    finally:
        await limiter.aclose()


# --- form posts (the body-limit middleware) ------------------------------------------------


def _form_app(limiter: RateLimiter | None, posts_per_minute: int = 3) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/auth/signup")
    async def form() -> JSONResponse:
        return JSONResponse({"ok": True})

    limits = BodyLimits(posts_per_minute=posts_per_minute)
    app.add_middleware(BodyLimitMiddleware, limits=limits, limiter=limiter)
    return app


async def test_form_posts_per_address_are_shared_by_gateways(redis_url: str, prefix: str) -> None:
    clock = ManualClock(START)
    limiters = [
        RateLimiter(RedisBackend.from_url(redis_url, prefix=prefix), clock=clock) for _ in range(2)
    ]
    try:
        async with _http(_form_app(limiters[0])) as a, _http(_form_app(limiters[1])) as b:
            codes = [(await gw.post("/v1/auth/signup")).status_code for gw in (a, b, a, b)]
        assert codes == [200, 200, 200, 429]
    finally:
        for limiter in limiters:
            await limiter.aclose()


def _gateway_app(acc: GatewayServices) -> FastAPI:
    """A whole gateway app (``create_app``), as each replica builds it."""
    registry = Registry()
    scheduler = Scheduler(registry, acc.reputation)
    completions = CompletionService(
        router=Router(scheduler), scheduler=scheduler, max_request_bytes=4096, timeout_s=5.0
    )
    deps = GatewayDeps(
        registry=registry,
        completions=completions,
        accounting=acc,
        body_limits=BodyLimits(posts_per_minute=3),
    )
    return create_app(deps)


async def test_gateway_apps_count_form_posts_through_their_shared_limiter(
    lichen_db: AsyncEngine, redis_url: str, prefix: str
) -> None:
    clock = ManualClock(START)
    a, b = (
        make_accounting(
            lichen_db, clock=clock, backend=RedisBackend.from_url(redis_url, prefix=prefix)
        )
        for _ in range(2)
    )
    try:
        async with _http(_gateway_app(a)) as gw_a, _http(_gateway_app(b)) as gw_b:
            codes = [(await gw.post("/no-such-form")).status_code for gw in (gw_a, gw_b) * 2]
        assert codes == [404, 404, 404, 429]  # counted before routing, on either replica
    finally:
        await a.limiter.aclose()
        await b.limiter.aclose()


async def test_form_posts_fail_closed_when_asked(dead_redis_url: str) -> None:
    for fail_closed, expected in ((False, 200), (True, 503)):
        limiter = RateLimiter(RedisBackend.from_url(dead_redis_url), fail_closed=fail_closed)
        async with _http(_form_app(limiter)) as http:
            response = await http.post("/v1/auth/signup")
        assert response.status_code == expected, fail_closed
        if fail_closed:
            assert response.json()["error"]["code"] == "service_unavailable"
        await limiter.aclose()


# --- hostile subjects ----------------------------------------------------------------------


async def test_huge_subjects_do_not_make_huge_redis_keys(
    redis_url: str, prefix: str, redis_keys: redis.Redis
) -> None:
    limiter = RateLimiter(RedisBackend.from_url(redis_url, prefix=prefix), clock=ManualClock(START))
    limits = Limits(requests_per_minute=1, tokens_per_day=1_000)
    huge = "key:" + "A" * 1_000_000
    try:
        await limiter.admit(huge, limits)
        await limiter.count_tokens(huge, limits, 10)
        await limiter.hit("auth:\r\n" + "é" * 100_000, Window(5, 60))
        with pytest.raises(LichenError) as info:  # still one subject, still limited
            await limiter.admit(huge, limits)
        assert info.value.code is ErrorCode.RATE_LIMITED
        assert (await limiter.admit(huge + "B", limits)).requests is not None  # another one
    finally:
        await limiter.aclose()
    keys = [k async for k in redis_keys.scan_iter(match=f"{prefix}*")]
    assert len(keys) == 4
    assert max(len(k) for k in keys) < len(prefix) + 160
