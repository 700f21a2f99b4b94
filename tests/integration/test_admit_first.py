"""Inference routes admit (rate limits, concurrency caps) before reading the body.

A caller the guard refuses must not make the gateway read up to the body limit
(1 MiB) first: the dialect route class enters the guard before the body is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts_kit import account_app, client, make_accounting
from lichen.gateway.dialects.openai import OpenAIRoute
from lichen.gateway.dialects.route import dialect_router
from lichen.gateway.schemas import ChatCompletionRequest


def _app(lichen_db: AsyncEngine, release: asyncio.Event, **settings: object) -> FastAPI:
    app = account_app(
        make_accounting(lichen_db, allow_anonymous=True, limit_loopback=True, **settings)
    )

    async def chat(body: ChatCompletionRequest) -> JSONResponse:
        if body.user == "hold":
            await release.wait()
        return JSONResponse({"model": body.model})

    router = dialect_router(OpenAIRoute)
    router.add_api_route("/v1/typed/chat", chat, methods=["POST"])
    app.include_router(router)
    return app


class Body:
    """A streamed request body that records whether anybody read it."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.read = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.read = True
        yield self.payload


CHAT = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'


async def test_a_rate_limited_callers_body_is_never_read(lichen_db: AsyncEngine) -> None:
    app = _app(lichen_db, asyncio.Event(), anonymous_requests_per_minute=1)
    async with client(app) as http:
        first = Body(CHAT)
        ok = await http.post("/v1/typed/chat", content=first)
        assert ok.status_code == 200, ok.text
        assert first.read
        second = Body(CHAT)
        refused = await http.post("/v1/typed/chat", content=second)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert not second.read


async def test_a_caller_over_its_concurrency_cap_is_refused_unread(
    lichen_db: AsyncEngine,
) -> None:
    release = asyncio.Event()
    app = _app(lichen_db, release, anonymous_concurrent_requests=1)
    async with client(app) as http:
        held = asyncio.create_task(
            http.post(
                "/v1/typed/chat",
                content=CHAT[:-1] + b', "user": "hold"}',
            )
        )
        try:
            for _ in range(200):  # until the held request holds the caller's one slot
                extra = Body(CHAT)
                refused = await http.post("/v1/typed/chat", content=extra)
                if refused.status_code == 429:
                    break
                await asyncio.sleep(0.01)
            assert refused.status_code == 429, refused.text
            assert not extra.read
        finally:
            release.set()
            assert (await held).status_code == 200
        after = Body(CHAT)
        assert (await http.post("/v1/typed/chat", content=after)).status_code == 200
        assert after.read
