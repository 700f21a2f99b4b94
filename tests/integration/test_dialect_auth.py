"""Every dialect's routes are guarded: keys (``x-api-key`` on Anthropic's route too),
refusals in the dialect's own shape, quota headers on the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts_kit import account_app, client, csrf, make_accounting, signup
from lichen.gateway.dialects.anthropic_messages import AnthropicRoute
from lichen.gateway.dialects.anthropic_schema import MessagesRequest
from lichen.gateway.dialects.ollama import OllamaRoute
from lichen.gateway.dialects.route import dialect_router
from lichen.gateway.guard import current_ticket


def guarded_app(lichen_db: AsyncEngine) -> FastAPI:
    app = account_app(make_accounting(lichen_db, allow_anonymous=False))

    async def who() -> JSONResponse:
        ticket = current_ticket()
        assert ticket is not None
        return JSONResponse({"subject": ticket.principal.subject})

    async def typed(body: MessagesRequest) -> JSONResponse:
        return await who()

    for route_class, path in ((AnthropicRoute, "/v1/messages"), (OllamaRoute, "/api/chat")):
        router = dialect_router(route_class)
        router.add_api_route(path, who, methods=["POST"])
        router.add_api_route(path + "/typed", typed, methods=["POST"])
        app.include_router(router)
    return app


@pytest.fixture
async def http(lichen_db: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with client(guarded_app(lichen_db)) as c:
        yield c


async def test_x_api_key_is_accepted_like_bearer(http: httpx.AsyncClient) -> None:
    body = await signup(http)
    made = await http.post("/v1/account/keys", json={}, headers=csrf(body))
    key = made.json()["key"]
    http.cookies.clear()  # from here on, only the key speaks
    ok = await http.post("/v1/messages", json={}, headers={"x-api-key": key})
    assert ok.status_code == 200, ok.text
    assert ok.json()["subject"].startswith("key:")
    assert any(name.lower().startswith("x-ratelimit") for name in ok.headers)
    bearer = await http.post("/v1/messages", json={}, headers={"authorization": f"Bearer {key}"})
    assert bearer.json() == ok.json()


async def test_refusals_come_in_each_dialects_shape(http: httpx.AsyncClient) -> None:
    anthropic = await http.post("/v1/messages", json={}, headers={"x-api-key": "lk-" + "x" * 43})
    assert anthropic.status_code == 401
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "authentication_error"
    assert anthropic.headers["request-id"].startswith("req_")
    nobody = await http.post("/api/chat", json={})
    assert nobody.status_code == 401
    assert set(nobody.json()) == {"error"} and isinstance(nobody.json()["error"], str)


async def test_a_refused_caller_is_refused_before_the_body_is_read(
    http: httpx.AsyncClient,
) -> None:
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        read += 1
        yield b"{not even json"

    bad_key = {"x-api-key": "lk-" + "x" * 43}
    refused = await http.post("/v1/messages/typed", content=body(), headers=bad_key)
    assert refused.status_code == 401 and refused.json()["type"] == "error"
    assert read == 0
    unreadable = await http.post("/v1/messages/typed", content=b"{not json")
    assert unreadable.status_code == 401  # no key on a keyed network: refused first
