"""``POST /v1/messages`` with the official ``anthropic`` SDK against the in-process network."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from dialect_kit import ARGUMENT_PIECES, TOOL_MODEL, ToolEngine, anthropic_client, sse_events
from fakes import ANSWER, MODEL, FakeEngine, LocalNetwork

TEXT = "".join(ANSWER)
MESSAGES = "/v1/messages"


@pytest.fixture
def net_options() -> dict[str, Any]:
    return {"max_request_bytes": 8192}


@pytest.fixture
async def claude(net: LocalNetwork) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic_client(net) as client:
        yield client


@pytest.fixture
async def engine(net: LocalNetwork) -> FakeEngine:
    engine = FakeEngine()
    await net.add_node(engine, "n1")
    return engine


def body(**changes: Any) -> dict[str, Any]:
    base = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
    return base | changes


async def test_create_answers_a_message(
    claude: anthropic.AsyncAnthropic, net: LocalNetwork, engine: FakeEngine
) -> None:
    message = await claude.messages.create(
        model=MODEL,
        max_tokens=64,
        system="Be brief.",
        stop_sequences=["\n\n"],
        extra_body={"temperature": 0.5},
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi"}],
            }
        ],
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == TEXT  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 8)
    (wire,) = engine.requests
    assert [(m.role, m.content) for m in wire.messages] == [
        ("system", "Be brief."),
        ("user", "Say hi"),
    ]
    assert (wire.params.max_tokens, wire.params.stop, wire.params.temperature) == (
        64,
        ["\n\n"],
        0.5,
    )


async def test_max_tokens_stops_with_max_tokens(
    claude: anthropic.AsyncAnthropic, net: LocalNetwork, engine: FakeEngine
) -> None:
    message = await claude.messages.create(
        model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


async def test_stream_sends_anthropic_events(
    claude: anthropic.AsyncAnthropic, net: LocalNetwork, engine: FakeEngine
) -> None:
    async with claude.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(pieces) == TEXT
    assert final.content[0].text == TEXT  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 8
    raw = await net.client.post(MESSAGES, json=body(stream=True))
    names = [name for name, _ in sse_events(raw.text)]
    assert names[0] == "message_start" and names[1] == "content_block_start"
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert names.count("content_block_delta") == len(ANSWER)


async def test_tools_answer_with_tool_use_blocks(
    claude: anthropic.AsyncAnthropic, net: LocalNetwork
) -> None:
    engine = ToolEngine()
    await net.add_node(engine, "tools")
    tool = {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    message = await claude.messages.create(
        model=TOOL_MODEL,
        max_tokens=64,
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert message.stop_reason == "tool_use"
    (use,) = message.content
    assert use.type == "tool_use"
    assert (use.id, use.name, use.input) == ("call_0", "get_weather", {"city": "Paris"})
    sent = engine.requests[0].params
    assert sent.tools is not None and json.loads(sent.tools)[0]["function"]["name"] == "get_weather"
    assert json.loads(sent.tool_choice or "") == {
        "type": "function",
        "function": {"name": "get_weather"},
    }
    # the tool's result goes back as a tool message answering the call
    await claude.messages.create(
        model=TOOL_MODEL,
        max_tokens=64,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [use.model_dump()]},  # type: ignore[list-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "call_0", "content": "Sunny"}],
            },
        ],
    )
    history = engine.requests[-1].messages
    assert json.loads(history[1].tool_calls or "")[0]["id"] == "call_0"
    assert (history[2].role, history[2].content, history[2].tool_call_id) == (
        "tool",
        "Sunny",
        "call_0",
    )


async def test_streamed_tool_use_sends_input_json_deltas(
    claude: anthropic.AsyncAnthropic, net: LocalNetwork
) -> None:
    await net.add_node(ToolEngine(), "tools")
    tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    raw = await net.client.post(MESSAGES, json=body(model=TOOL_MODEL, tools=[tool], stream=True))
    events = sse_events(raw.text)
    starts = [data for name, data in events if name == "content_block_start"]
    assert starts[0]["content_block"] == {
        "type": "tool_use",
        "id": "call_0",
        "name": "get_weather",
        "input": {},
    }
    partial = [
        data["delta"]["partial_json"]
        for name, data in events
        if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta"
    ]
    assert partial == ARGUMENT_PIECES
    (delta,) = [data for name, data in events if name == "message_delta"]
    assert delta["delta"]["stop_reason"] == "tool_use"
    async with claude.messages.stream(
        model=TOOL_MODEL,
        max_tokens=64,
        tools=[tool],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather?"}],
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[0].input == {"city": "Paris"}  # type: ignore[union-attr]


# --- errors: Anthropic's shape ---------------------------------------------------------


def assert_anthropic_error(response: Any, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["type"] == "error" and set(payload) == {"type", "error"}, payload
    assert payload["error"]["type"] == kind, payload
    assert response.headers["request-id"].startswith("req_")
    message: str = payload["error"]["message"]
    assert message
    return message


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"temperature": 3}, "temperature"),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
        (
            {"tools": [{"name": "x", "input_schema": {"enum": list(range(1000))}}]},
            "tools",
        ),
        ({"tools": [{"name": "x"}]}, "tools.0.input_schema"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            "messages.0.content",
        ),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"max_tokens": 2**80}, "max_tokens"),
    ],
)
async def test_bad_bodies_are_anthropic_shaped_400s(
    claude: anthropic.AsyncAnthropic,
    net: LocalNetwork,
    engine: FakeEngine,
    changes: dict[str, Any],
    param: str,
) -> None:
    sent = {k: v for k, v in (body() | changes).items() if v is not None}
    message = assert_anthropic_error(
        await net.client.post(MESSAGES, json=sent), 400, "invalid_request_error"
    )
    assert param.split(".")[0] in message or param.split(".")[-1] in message, message
    assert engine.requests == []


async def test_malformed_and_oversized_bodies(
    claude: anthropic.AsyncAnthropic, net: LocalNetwork, engine: FakeEngine
) -> None:
    for raw in (b"{", b"", b"[1, 2]", b"\xff"):
        r = await net.client.post(MESSAGES, content=raw)
        assert_anthropic_error(r, 400, "invalid_request_error")

    async def chunked() -> AsyncIterator[bytes]:  # no content-length: counted while reading
        yield b'{"model": "fake-model", "max_tokens": 8, "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1024
        yield b'"}]}'

    r = await net.client.post(MESSAGES, content=chunked())
    assert_anthropic_error(r, 413, "request_too_large")
    assert engine.requests == []


async def test_sdk_raises_typed_errors(
    claude: anthropic.AsyncAnthropic, net: LocalNetwork, engine: FakeEngine
) -> None:
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.create(
            model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.BadRequestError):
        await claude.messages.create(
            model=MODEL,
            max_tokens=8,
            messages=[
                {
                    "role": "assistant",
                    "content": [{"type": "tool_result", "tool_use_id": "x", "content": "y"}],
                }
            ],
        )
