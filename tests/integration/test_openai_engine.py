"""The ``openai`` engine against an upstream faked in-process, and through the network.

The fake upstream is a small ASGI app speaking OpenAI's API (``/v1/models``,
streaming chat and text completions, embeddings) whose answers and failures the
tests script. The engine talks to it through httpx's ASGI transport, or through
a real loopback server where the test needs to switch it off.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fakes import MODEL, FakeEngine, LocalNetwork, eventually, sse_payloads, streamed_text
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from lichen.engines.base import Delta, EngineEvent, Finish
from lichen.engines.composite import CompositeEngine
from lichen.engines.openai_upstream import OpenAIEngine, UpstreamConfig
from lichen.errors import ErrorCode, LichenError
from lichen.server import HttpServer
from lichen.wire.messages import ChatMessage, EmbeddingRequest, GenerationRequest, SamplingParams
from lichen.wire.vectors import unpack_vector

UPSTREAM_MODEL = "up/model-7b"
KEY = "sk-upstream-test-key"
TOKENS = ["The", " sky", " is", " blue", "."]


@dataclass
class FakeUpstream:
    """An OpenAI-compatible server with scripted answers and failures."""

    models: list[str] = field(default_factory=lambda: [UPSTREAM_MODEL])
    tokens: list[str] = field(default_factory=lambda: list(TOKENS))
    usage: bool = True
    fail_status: int | None = None
    fail_body: dict[str, Any] = field(default_factory=dict)
    stream_error: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    bodies: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models(request: Request) -> Response:
            self.auth.append(request.headers.get("authorization"))
            data = [{"id": m, "object": "model"} for m in self.models]
            return JSONResponse({"object": "list", "data": data})

        async def generate(request: Request, kind: str) -> Response:
            body = await request.json()
            self.bodies.append(body)
            self.auth.append(request.headers.get("authorization"))
            if self.fail_status is not None:
                return JSONResponse(self.fail_body, status_code=self.fail_status)
            return StreamingResponse(self._sse(kind), media_type="text/event-stream")

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            return await generate(request, "chat")

        @app.post("/v1/completions")
        async def completions(request: Request) -> Response:
            return await generate(request, "completion")

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> Response:
            body = await request.json()
            self.bodies.append(body)
            data = [
                {"object": "embedding", "index": i, "embedding": [float(i), 0.5, -1.0]}
                for i, _ in enumerate(body["input"])
            ]
            return JSONResponse({"data": data, "usage": {"prompt_tokens": 7, "total_tokens": 7}})

        return app

    async def _sse(self, kind: str) -> AsyncIterator[bytes]:
        def event(payload: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        for token in self.tokens:
            choice = (
                {"index": 0, "delta": {"content": token}}
                if kind == "chat"
                else {"index": 0, "text": token}
            )
            yield event({"choices": [choice | {"finish_reason": None}]})
        if self.stream_error is not None:
            yield event({"error": self.stream_error})
            return
        reason = "stop"
        if self.tool_calls:
            reason = "tool_calls"
            for call in self.tool_calls:
                delta = {"tool_calls": [call]}
                yield event({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        yield event({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
        if self.usage:
            usage = {"prompt_tokens": 11, "completion_tokens": len(self.tokens), "total_tokens": 0}
            yield event({"choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"


def config(**changes: Any) -> UpstreamConfig:
    defaults: dict[str, Any] = {"base_url": "http://upstream/v1", "api_key": KEY, "refresh_s": 60}
    return UpstreamConfig(**(defaults | changes))


async def start_engine(upstream: FakeUpstream, **changes: Any) -> OpenAIEngine:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=upstream.app()),
        base_url="http://upstream",
        headers={"authorization": f"Bearer {KEY}"},
    )
    return await OpenAIEngine.start(config(**changes), client=client)


def chat(model: str = UPSTREAM_MODEL, **params: Any) -> GenerationRequest:
    return GenerationRequest(
        kind="chat",
        model=model,
        messages=[ChatMessage(role="user", content="What colour is the sky?")],
        params=SamplingParams(**params),
    )


async def run(engine: OpenAIEngine, request: GenerationRequest) -> list[EngineEvent]:
    return [event async for event in engine.generate(request)]


@pytest.fixture
async def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
async def engine(upstream: FakeUpstream) -> AsyncIterator[OpenAIEngine]:
    engine = await start_engine(upstream)
    try:
        yield engine
    finally:
        await engine.close()


# --- discovery and streaming ---------------------------------------------------------


async def test_models_are_discovered_from_the_upstream(engine: OpenAIEngine) -> None:
    (info,) = engine.models()
    assert (info.name, info.engine, info.sha256, info.tools) == (UPSTREAM_MODEL, "openai", "", True)
    assert engine.load().free_slots == 4


async def test_chat_streams_with_usage_passed_through(
    engine: OpenAIEngine, upstream: FakeUpstream
) -> None:
    events = await run(engine, chat(max_tokens=20, temperature=0.0, stop=["\n"]))
    deltas, finish = events[:-1], events[-1]
    assert "".join(d.text for d in deltas if isinstance(d, Delta)) == "".join(TOKENS)
    assert isinstance(finish, Finish)
    assert finish.finish_reason == "stop"
    assert (finish.usage.prompt_tokens, finish.usage.completion_tokens) == (11, len(TOKENS))
    assert finish.usage.reported
    (body,) = upstream.bodies
    assert body["model"] == UPSTREAM_MODEL
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["stop"]) == (20, 0.0, ["\n"])
    assert set(upstream.auth) == {f"Bearer {KEY}"}


async def test_text_completions_use_the_completions_endpoint(
    engine: OpenAIEngine, upstream: FakeUpstream
) -> None:
    request = GenerationRequest(kind="completion", model=UPSTREAM_MODEL, prompt="Once")
    events = await run(engine, request)
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "".join(TOKENS)
    assert upstream.bodies[0]["prompt"] == "Once"


async def test_missing_usage_is_counted_as_nothing_and_marked(
    engine: OpenAIEngine, upstream: FakeUpstream
) -> None:
    upstream.usage = False
    finish = (await run(engine, chat()))[-1]
    assert isinstance(finish, Finish)
    assert (finish.usage.prompt_tokens, finish.usage.completion_tokens) == (0, 0)
    assert finish.usage.reported is False


async def test_tool_calls_pass_through(engine: OpenAIEngine, upstream: FakeUpstream) -> None:
    upstream.tokens = []
    upstream.tool_calls = [
        {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "f", "arguments": ""},
        },
        {"index": 0, "function": {"arguments": '{"x": 1}'}},
    ]
    tools = json.dumps([{"type": "function", "function": {"name": "f", "parameters": {}}}])
    events = await run(engine, chat(tools=tools, tool_choice='"auto"'))
    assert upstream.bodies[0]["tools"][0]["function"]["name"] == "f"
    assert upstream.bodies[0]["tool_choice"] == "auto"
    calls = [json.loads(e.tool_calls) for e in events if isinstance(e, Delta)]
    assert calls == [[c] for c in upstream.tool_calls]
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.finish_reason == "tool_calls"


async def test_embeddings(upstream: FakeUpstream) -> None:
    engine = await start_engine(upstream, embeddings=True)
    try:
        assert engine.models()[0].embeddings
        result = await engine.embed(EmbeddingRequest(model=UPSTREAM_MODEL, inputs=["a", "b"]))
        assert [unpack_vector(v) for v in result.vectors] == [[0.0, 0.5, -1.0], [1.0, 0.5, -1.0]]
        assert result.usage.prompt_tokens == 7
    finally:
        await engine.close()


async def test_embeddings_refused_when_not_advertised(engine: OpenAIEngine) -> None:
    with pytest.raises(LichenError) as info:
        await engine.embed(EmbeddingRequest(model=UPSTREAM_MODEL, inputs=["a"]))
    assert info.value.code is ErrorCode.INVALID_REQUEST


# --- error mapping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "code", "param"),
    [
        (400, {"error": {"message": "bad temperature", "param": "temperature"}},
         ErrorCode.INVALID_REQUEST, "temperature"),
        (400, {"error": {"message": "too long", "code": "context_length_exceeded"}},
         ErrorCode.CONTEXT_LENGTH_EXCEEDED, "messages"),
        (422, {"detail": "unprocessable"}, ErrorCode.INVALID_REQUEST, None),
        (404, {"error": {"message": "no such model"}}, ErrorCode.MODEL_NOT_FOUND, "model"),
        (401, {"error": {"message": "bad key"}}, ErrorCode.NODE_FAILED, None),
        (429, {"error": {"message": "slow down"}}, ErrorCode.NO_CAPACITY, None),
        (500, {"error": {"message": "boom"}}, ErrorCode.NODE_FAILED, None),
        (503, {}, ErrorCode.NODE_FAILED, None),
    ],
)  # fmt: skip
async def test_upstream_errors_map_to_lichen_codes(
    engine: OpenAIEngine,
    upstream: FakeUpstream,
    status: int,
    body: dict[str, Any],
    code: ErrorCode,
    param: str | None,
) -> None:
    upstream.fail_status, upstream.fail_body = status, body
    with pytest.raises(LichenError) as info:
        await run(engine, chat())
    assert info.value.code is code
    assert info.value.param == param
    assert info.value.http_status == code.http_status


async def test_an_error_inside_the_stream_is_mapped(
    engine: OpenAIEngine, upstream: FakeUpstream
) -> None:
    upstream.stream_error = {"code": 500, "message": "slot crashed", "type": "server_error"}
    with pytest.raises(LichenError) as info:
        await run(engine, chat())
    assert info.value.code is ErrorCode.NODE_FAILED


async def test_unknown_model_is_not_found_without_asking_the_upstream(
    engine: OpenAIEngine, upstream: FakeUpstream
) -> None:
    with pytest.raises(LichenError) as info:
        await run(engine, chat(model="other"))
    assert info.value.code is ErrorCode.MODEL_NOT_FOUND
    assert upstream.bodies == []


# --- an upstream that goes away ------------------------------------------------------


@pytest.fixture
async def live_upstream() -> AsyncIterator[tuple[FakeUpstream, HttpServer, int]]:
    upstream = FakeUpstream()
    server = HttpServer(upstream.app(), host="127.0.0.1", port=0)
    port = await server.start()
    try:
        yield upstream, server, port
    finally:
        await server.stop()


async def test_unreachable_upstream_is_node_failed_and_withdraws_its_models(
    live_upstream: tuple[FakeUpstream, HttpServer, int],
) -> None:
    _upstream, server, port = live_upstream
    engine = await OpenAIEngine.start(
        config(base_url=f"http://127.0.0.1:{port}", refresh_s=30, connect_timeout_s=1)
    )
    changes: list[int] = []
    engine.on_models_changed(lambda: changes.append(len(engine.models())))
    try:
        assert [m.name for m in engine.models()] == [UPSTREAM_MODEL]
        await server.stop()
        with pytest.raises(LichenError) as info:
            await run(engine, chat())
        assert info.value.code is ErrorCode.NODE_FAILED  # the router fails over on this
        # the failed request triggered a re-check at once, not after refresh_s
        await eventually(lambda: engine.models() == [], what="models to be withdrawn")
        assert changes == [0]
        assert engine.load().free_slots == 0
    finally:
        await engine.close()


async def test_periodic_refresh_sees_the_model_list_change(upstream: FakeUpstream) -> None:
    engine = await start_engine(upstream, refresh_s=0.05)
    changed = asyncio.Event()
    engine.on_models_changed(changed.set)
    try:
        upstream.models = [UPSTREAM_MODEL, "up/second"]
        await asyncio.wait_for(changed.wait(), 5)
        assert [m.name for m in engine.models()] == ["up/model-7b", "up/second"]
    finally:
        await engine.close()


async def test_an_upstream_down_at_start_serves_nothing_until_it_comes_up() -> None:
    engine = await OpenAIEngine.start(
        config(base_url="http://127.0.0.1:9", refresh_s=60, connect_timeout_s=0.5)
    )
    try:
        assert engine.models() == []
    finally:
        await engine.close()


# --- through the network -------------------------------------------------------------


async def test_a_node_serves_upstream_and_local_models_and_reannounces_changes(
    net: LocalNetwork, upstream: FakeUpstream
) -> None:
    remote = await start_engine(upstream, refresh_s=0.05)
    local = FakeEngine()
    await net.add_node(CompositeEngine([local, remote]), "hybrid")  # type: ignore[arg-type]

    listed = (await net.client.get("/v1/models")).json()["data"]
    assert sorted(m["id"] for m in listed) == sorted([MODEL, UPSTREAM_MODEL])

    body = {
        "model": UPSTREAM_MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = await net.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    payloads = sse_payloads(r.text)
    assert streamed_text(payloads) == "".join(TOKENS)
    assert payloads[-1]["usage"]["prompt_tokens"] == 11

    # tools: the upstream model takes them, the local fake model does not
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    r = await net.client.post("/v1/chat/completions", json=body | {"stream": False, "tools": tools})
    assert r.status_code == 200, r.text
    assert upstream.bodies[-1]["tools"] == tools
    r = await net.client.post("/v1/chat/completions", json=body | {"model": MODEL, "tools": tools})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "tools"

    # the upstream drops its model: the node re-signs its manifest, the gateway stops listing it
    upstream.models = []
    await eventually(
        lambda: UPSTREAM_MODEL not in net.tracker.registry.model_counts(),
        what="upstream model to be withdrawn",
    )
    listed = (await net.client.get("/v1/models")).json()["data"]
    assert [m["id"] for m in listed] == [MODEL]
    r = await net.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 404
    # and it comes back when the upstream does
    upstream.models = [UPSTREAM_MODEL]
    await eventually(
        lambda: UPSTREAM_MODEL in net.tracker.registry.model_counts(), what="model to return"
    )
