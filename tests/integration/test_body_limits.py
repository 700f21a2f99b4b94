"""Request bodies are capped, timed and rate-limited before handlers read them.

Over a real socket (uvicorn on loopback through ``lichen.server.HttpServer``):
chunked uploads far over the cap are refused as soon as they cross it, not read
whole; a declared oversized ``Content-Length`` is refused before any body byte;
a stalled body gets 408; form routes are rate-limited before their body is read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from hostile_kit import chunked_upload, read_response
from pydantic import BaseModel

from lichen.gateway.body_limit import BodyLimitMiddleware, BodyLimits
from lichen.http.errors import install_error_handlers
from lichen.server import HttpServer
from lichen.web.forms import read_fields

FORM_CAP = 64 * 1024
INFERENCE_CAP = 256 * 1024
HUGE = 200 * 1024 * 1024


class Signup(BaseModel):
    username: str


def build_app(limits: BodyLimits, *, handlers: bool = True) -> tuple[FastAPI, list[int]]:
    """Routes shaped like the gateway's: a typed body, a raw reader, a form."""
    app = FastAPI()
    seen: list[int] = []  # body sizes the handlers got
    if handlers:
        install_error_handlers(app)

    @app.post("/v1/auth/signup")
    async def signup(body: Signup) -> JSONResponse:
        seen.append(len(body.username))
        return JSONResponse({"ok": True})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.body()
        seen.append(len(body))
        return JSONResponse({"bytes": len(body)})

    @app.post("/node/telemetry")
    async def telemetry(request: Request) -> JSONResponse:
        fields = await read_fields(request)  # the web UI's form reader
        seen.append(len(fields))
        return JSONResponse({"ok": True})

    @app.post("/swallowing")
    async def swallowing(request: Request) -> JSONResponse:
        try:
            await request.body()
        except Exception:  # a careless handler
            return JSONResponse({"oops": True}, status_code=500)
        return JSONResponse({"ok": True})

    app.add_middleware(BodyLimitMiddleware, limits=limits)
    return app, seen


@dataclass
class Served:
    port: int
    seen: list[int]


@pytest.fixture
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    options = getattr(request, "param", {})
    limits = BodyLimits(
        inference_bytes=INFERENCE_CAP,
        form_bytes=FORM_CAP,
        read_timeout_s=options.get("read_timeout_s", 15.0),
        posts_per_minute=options.get("posts_per_minute", 0),
        limit_loopback=True,
    )
    app, seen = build_app(limits, handlers=options.get("handlers", True))
    server = HttpServer(app, host="127.0.0.1", port=0)
    port = await server.start()
    try:
        yield Served(port, seen)
    finally:
        await server.stop()


def assert_openai_error(body: dict[str, object], code: str) -> None:
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code


@pytest.mark.parametrize("path", ["/v1/auth/signup", "/node/telemetry"])
async def test_huge_chunked_form_bodies_are_refused_early(served: Served, path: str) -> None:
    status, body, sent = await chunked_upload(served.port, path, HUGE)
    assert status == 413
    assert_openai_error(body, "request_too_large")
    assert sent < 16 * 1024 * 1024, f"the server read {sent} bytes before refusing"
    assert served.seen == []


async def test_inference_routes_get_the_larger_cap(served: Served) -> None:
    status, body, sent = await chunked_upload(served.port, "/v1/chat/completions", HUGE)
    assert status == 413
    assert_openai_error(body, "request_too_large")
    assert sent < 16 * 1024 * 1024
    # a body over the form cap but under the inference cap is read
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    payload = b"x" * (FORM_CAP * 2)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\n"
        + f"content-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    status, _, answer = await read_response(reader)
    writer.close()
    assert status == 200
    assert json.loads(answer) == {"bytes": len(payload)}


async def test_declared_oversize_is_refused_before_any_body_byte(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(
        f"POST /v1/auth/signup HTTP/1.1\r\nhost: a\r\ncontent-length: {HUGE}\r\n\r\n".encode()
    )
    status, headers, body = await asyncio.wait_for(read_response(reader), timeout=10)
    writer.close()
    assert status == 413
    assert headers.get("connection") == "close"
    assert_openai_error(json.loads(body), "request_too_large")


async def test_bad_content_length_is_400(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"POST /v1/auth/signup HTTP/1.1\r\nhost: a\r\ncontent-length: 12abc\r\n\r\n")
    status, _, _ = await asyncio.wait_for(read_response(reader), timeout=10)
    writer.close()
    assert status == 400


@pytest.mark.parametrize("served", [{"read_timeout_s": 0.3}], indirect=True)
async def test_a_stalled_body_gets_408(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
        b'5\r\n{"a":\r\n'
    )  # ... and nothing more
    status, _, body = await asyncio.wait_for(read_response(reader), timeout=10)
    writer.close()
    assert status == 408
    assert_openai_error(json.loads(body), "request_timeout")
    assert served.seen == []


@pytest.mark.parametrize("served", [{"posts_per_minute": 2}], indirect=True)
async def test_form_posts_are_rate_limited_before_the_body_is_read(served: Served) -> None:
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        body = b'{"username": "ann"}'
        writer.write(
            b"POST /v1/auth/signup HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status, _, _ = await read_response(reader)
        writer.close()
        assert status == 200
    # The third declares a body it never sends: the refusal cannot have waited for it.
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"POST /v1/auth/signup HTTP/1.1\r\nhost: a\r\ncontent-length: 60000\r\n\r\n")
    status, headers, answer = await asyncio.wait_for(read_response(reader), timeout=10)
    writer.close()
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    assert_openai_error(json.loads(answer), "rate_limit_exceeded")
    # inference routes are not counted here (the request guard limits them)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n{}")
    status, _, _ = await read_response(reader)
    writer.close()
    assert status == 200


@pytest.mark.parametrize("served", [{"handlers": False}], indirect=True)
async def test_an_app_without_error_handlers_still_answers_413(served: Served) -> None:
    status, _, sent = await chunked_upload(served.port, "/v1/chat/completions", HUGE)
    assert status == 413
    assert sent < 16 * 1024 * 1024


async def test_a_handler_cannot_swallow_the_refusal(served: Served) -> None:
    status, body, sent = await chunked_upload(served.port, "/swallowing", HUGE)
    assert status == 413
    assert_openai_error(body, "request_too_large")
    assert sent < 16 * 1024 * 1024


def test_caps_by_route() -> None:
    limits = BodyLimits(inference_bytes=10, form_bytes=1)
    assert limits.cap_for("/v1/chat/completions") == 10
    assert limits.cap_for("/api/chat") == 10
    assert limits.cap_for("/v1/responses") == 10
    assert limits.cap_for("/v1/auth/signup") == 1
    assert limits.cap_for("/v1/account/keys") == 1
    assert limits.cap_for("/node/telemetry") == 1
    assert limits.cap_for("/signup") == 1
    assert limits.cap_for("/v1/catalog/uploads/u1/chunks/0") >= 1 << 20  # a model chunk
