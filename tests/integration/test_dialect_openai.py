"""OpenAI chat and completions through the one answer path: ``n``, streamed tool calls,
``best_of``, and the OpenAPI document and offline ``/docs``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from dialect_kit import (
    ARGUMENT_PIECES,
    TOOL_MODEL,
    WEATHER_TOOL,
    LogprobEngine,
    ToolEngine,
    openai_client,
)
from fakes import (
    ANSWER,
    MODEL,
    FakeEngine,
    LocalNetwork,
    assert_openai_error,
    eventually,
    sse_payloads,
)

from lichen.gateway.choices import MAX_CHOICES

TEXT = "".join(ANSWER)
CHAT = "/v1/chat/completions"


@pytest.fixture
async def client(net: LocalNetwork) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai_client(net) as sdk:
        yield sdk


@pytest.fixture
async def engine(net: LocalNetwork) -> FakeEngine:
    engine = FakeEngine(slots=8)
    await net.add_node(engine, "n1")
    return engine


async def test_n_choices_with_summed_usage(client: openai.AsyncOpenAI, engine: FakeEngine) -> None:
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], n=3, seed=7
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.message.content == TEXT for c in reply.choices)
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (15, 24)
    assert sorted(r.params.seed for r in engine.requests) == [7, 8, 9]  # distinct choices


async def test_n_choices_stream(client: openai.AsyncOpenAI, engine: FakeEngine) -> None:
    stream = await client.completions.create(
        model=MODEL, prompt="Once", n=2, stream=True, stream_options={"include_usage": True}
    )
    texts = {0: "", 1: ""}
    finished = set()
    usage = None
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                finished.add(choice.index)
        usage = chunk.usage or usage
    assert texts == {0: TEXT, 1: TEXT} and finished == {0, 1}
    assert usage is not None and usage.completion_tokens == 16


async def test_n_past_the_bound_and_best_of_are_refused(
    net: LocalNetwork, engine: FakeEngine
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": MAX_CHOICES + 1}
    assert (
        assert_openai_error(await net.client.post(CHAT, json=body), 400, "invalid_request_error")[
            "param"
        ]
        == "n"
    )
    r = await net.client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "best_of": 2})
    assert assert_openai_error(r, 400, "invalid_request_error")["param"] == "best_of"
    assert engine.requests == []


async def test_streamed_tool_calls_arrive_incrementally(
    client: openai.AsyncOpenAI, net: LocalNetwork
) -> None:
    await net.add_node(ToolEngine(calls=2), "tools")
    tool: Any = {"type": "function", "function": WEATHER_TOOL}
    stream = await client.chat.completions.create(
        model=TOOL_MODEL,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[tool],
        stream=True,
    )
    deltas = []
    reason = None
    async for chunk in stream:
        for choice in chunk.choices:
            deltas.extend(choice.delta.tool_calls or [])
            reason = choice.finish_reason or reason
    assert reason == "tool_calls"
    for index in (0, 1):
        mine = [d for d in deltas if d.index == index]
        head, *rest = mine
        assert head.id == f"call_{index}" and head.function is not None
        assert head.function.name == "get_weather"  # id and name first
        assert [d.function.arguments for d in rest if d.function] == ARGUMENT_PIECES
        assert all(d.id is None for d in rest)
    whole = await client.chat.completions.create(
        model=TOOL_MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=[tool]
    )
    calls = whole.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}] * 2  # type: ignore[union-attr]


async def test_every_inference_route_documents_its_body(net: LocalNetwork) -> None:
    spec = (await net.client.get("/openapi.json")).json()
    for path in (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
        "/v1/embeddings",
        "/api/chat",
        "/api/generate",
        "/api/embed",
    ):
        body = spec["paths"][path]["post"]["requestBody"]
        ref = body["content"]["application/json"]["schema"]["$ref"]
        name = ref.rsplit("/", 1)[-1]
        assert spec["components"]["schemas"][name]["properties"], path


async def test_docs_render_from_vendored_assets(net: LocalNetwork) -> None:
    page = await net.client.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text and "https://" not in page.text.split("<body>")[0]
    assert "/docs/assets/swagger-ui-bundle.js" in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE"):
        r = await net.client.get(f"/docs/assets/{asset}")
        assert r.status_code == 200 and r.content, asset


async def test_sse_body_of_a_chat_stream_is_well_formed(
    net: LocalNetwork, engine: FakeEngine
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
    payloads = sse_payloads((await net.client.post(CHAT, json=body)).text)
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"


async def test_logprobs_on_chat_and_completions(
    client: openai.AsyncOpenAI, net: LocalNetwork
) -> None:
    engine = LogprobEngine()
    await net.add_node(engine, "lp")
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], logprobs=True, top_logprobs=1
    )
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert [e.token for e in content or []] == ANSWER
    assert all(len(e.top_logprobs) == 1 for e in content or [])
    assert engine.requests[-1].params.logprobs == 1
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], logprobs=True, stream=True
    )
    streamed = [
        entry.token
        async for chunk in stream
        for choice in chunk.choices
        if choice.logprobs is not None
        for entry in choice.logprobs.content or []
    ]
    assert streamed == ANSWER
    legacy = await client.completions.create(model=MODEL, prompt="x", logprobs=0)
    assert legacy.choices[0].logprobs is not None
    assert legacy.choices[0].logprobs.tokens == ANSWER
    plain = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}]
    )
    assert plain.choices[0].logprobs is None  # not asked, not sent
    assert engine.requests[-1].params.logprobs is None


async def test_a_tool_call_cut_mid_stream_is_not_resumed(net: LocalNetwork) -> None:
    first, second = ToolEngine(fail_mid_call=True), ToolEngine(fail_mid_call=True)
    await net.add_node(first, "t1")
    await net.add_node(second, "t2")
    body = {
        "model": TOOL_MODEL,
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [{"type": "function", "function": WEATHER_TOOL}],
        "stream": True,
    }
    payloads = sse_payloads((await net.client.post(CHAT, json=body)).text)
    heads = [
        call
        for p in payloads
        for choice in p.get("choices", [])
        for call in choice["delta"].get("tool_calls") or []
    ]
    assert [h["id"] for h in heads] == ["call_0"]  # no second, fresh call from another node
    assert payloads[-1]["error"]["code"] == "node_failed"
    assert len(first.requests) + len(second.requests) == 1


async def test_a_client_leaving_cancels_every_choice(net: LocalNetwork) -> None:
    engine = FakeEngine(ANSWER * 20, delay_s=0.02, slots=8)
    await net.add_node(engine, "slow")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 3}
    with pytest.raises(httpx.ReadTimeout):
        await net.client.post(CHAT, json=body, timeout=0.5)
    await eventually(lambda: engine.cancelled == 3, what="every choice's job to be cancelled")
    await eventually(lambda: len(net.records) == 3, what="three request records")
    assert [r.status for r in net.records] == [499, 499, 499]
    assert engine.finished == 0


async def test_a_garbled_logprobs_report_is_dropped_not_fatal(
    client: openai.AsyncOpenAI, net: LocalNetwork
) -> None:
    await net.add_node(LogprobEngine(garbled=True), "garbled")
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], logprobs=True
    )
    assert reply.choices[0].message.content == TEXT
    assert reply.choices[0].logprobs is not None and reply.choices[0].logprobs.content == []
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], logprobs=True, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == TEXT
