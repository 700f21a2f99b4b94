"""``POST /v1/responses`` with the official ``openai`` SDK against the in-process network."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from dialect_kit import (
    ARGUMENT_PIECES,
    TOOL_MODEL,
    WEATHER_TOOL,
    ToolEngine,
    openai_client,
    sse_events,
)
from fakes import ANSWER, MODEL, FakeEngine, LocalNetwork, assert_openai_error

TEXT = "".join(ANSWER)
RESPONSES = "/v1/responses"


@pytest.fixture
async def client(net: LocalNetwork) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai_client(net) as sdk:
        yield sdk


@pytest.fixture
async def engine(net: LocalNetwork) -> FakeEngine:
    engine = FakeEngine()
    await net.add_node(engine, "n1")
    return engine


async def test_text_input(client: openai.AsyncOpenAI, engine: FakeEngine) -> None:
    response = await client.responses.create(model=MODEL, input="Say hi", instructions="Be kind")
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == TEXT
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (5, 8)
    (wire,) = engine.requests
    assert [(m.role, m.content) for m in wire.messages] == [
        ("system", "Be kind"),
        ("user", "Say hi"),
    ]


async def test_message_input_and_limits(client: openai.AsyncOpenAI, engine: FakeEngine) -> None:
    response = await client.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "Rules"},
            {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "More"},
        ],
        max_output_tokens=3,
        temperature=0,
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "".join(ANSWER[:3])
    wire = engine.requests[0]
    assert [m.role for m in wire.messages] == ["system", "user", "assistant", "user"]
    assert (wire.params.max_tokens, wire.params.temperature) == (3, 0)


async def test_text_format_json_schema_reaches_the_node(
    client: openai.AsyncOpenAI, engine: FakeEngine
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    await client.responses.create(
        model=MODEL,
        input="json please",
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema}},
    )
    sent = json.loads(engine.requests[0].params.response_format or "")
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"] == schema


async def test_stream_sends_semantic_events(
    client: openai.AsyncOpenAI, net: LocalNetwork, engine: FakeEngine
) -> None:
    async with client.responses.stream(model=MODEL, input="Say hi") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == TEXT
    assert final.output_text == TEXT and final.status == "completed"
    raw = await net.client.post(RESPONSES, json={"model": MODEL, "input": "x", "stream": True})
    events = sse_events(raw.text)
    names = [name for name, _ in events]
    assert names[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert names[-1] == "response.completed"
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert events[-1][1]["response"]["usage"]["output_tokens"] == 8


async def test_function_tools_and_outputs(client: openai.AsyncOpenAI, net: LocalNetwork) -> None:
    engine = ToolEngine(calls=2)
    await net.add_node(engine, "tools")
    tool: Any = {"type": "function", **WEATHER_TOOL}
    response = await client.responses.create(model=TOOL_MODEL, input="Weather?", tools=[tool])
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_0", "get_weather", {"city": "Paris"}),
        ("call_1", "get_weather", {"city": "Paris"}),
    ]
    follow_up: Any = [
        {"role": "user", "content": "Weather?"},
        *[
            {
                "type": "function_call",
                "call_id": c.call_id,
                "name": c.name,
                "arguments": c.arguments,
            }
            for c in calls
        ],
        {"type": "function_call_output", "call_id": "call_0", "output": "Sunny"},
        {"type": "function_call_output", "call_id": "call_1", "output": "Rainy"},
    ]
    await client.responses.create(model=TOOL_MODEL, input=follow_up, tools=[tool])
    history = engine.requests[-1].messages
    assert [m.role for m in history] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in json.loads(history[1].tool_calls or "")] == ["call_0", "call_1"]
    assert [(m.tool_call_id, m.content) for m in history[2:]] == [
        ("call_0", "Sunny"),
        ("call_1", "Rainy"),
    ]


async def test_streamed_function_call_arguments(
    client: openai.AsyncOpenAI, net: LocalNetwork
) -> None:
    await net.add_node(ToolEngine(), "tools")
    tool: Any = {"type": "function", **WEATHER_TOOL}
    async with client.responses.stream(model=TOOL_MODEL, input="Weather?", tools=[tool]) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    added = [e for e in events if e.type == "response.output_item.added"]
    assert added[0].item.type == "function_call" and added[0].item.name == "get_weather"
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert pieces == ARGUMENT_PIECES
    (call,) = final.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}


@pytest.mark.parametrize("field", [{"store": True}, {"previous_response_id": "resp_123"}])
async def test_storing_is_refused_where_the_policy_keeps_nothing(
    net: LocalNetwork, engine: FakeEngine, field: dict[str, Any]
) -> None:
    r = await net.client.post(RESPONSES, json={"model": MODEL, "input": "x"} | field)
    error = assert_openai_error(r, 400, "invalid_request_error")
    (param,) = field
    assert error["param"] == param
    assert "privacy policy" in error["message"]
    assert engine.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": [{"type": "input_image", "image_url": "x"}]}, "input.0"),
        (
            {"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input.0",
        ),
        ({"model": MODEL, "input": [{"type": "function_call_output"}]}, "input.0"),
        ({"model": MODEL, "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": MODEL, "input": "x", "max_output_tokens": 2**70}, "max_output_tokens"),
        ({"model": MODEL, "input": "x", "max_output_tokens": 10**6}, "max_output_tokens"),
        (
            {
                "model": MODEL,
                "input": "x",
                "text": {"format": {"type": "json_schema", "schema": {"enum": list(range(999))}}},
            },
            "text.format",
        ),
        ({"model": MODEL, "input": "x", "temperature": 9}, "temperature"),
        ({"model": MODEL, "input": "x", "tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"model": MODEL, "input": "x", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": MODEL, "input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        (
            {"model": MODEL, "input": "x", "text": {"format": {"type": "json_schema"}}},
            "text.format.schema",
        ),
    ],
)
async def test_bad_bodies_are_openai_shaped_400s(
    net: LocalNetwork, engine: FakeEngine, body: dict[str, Any], param: str
) -> None:
    error = assert_openai_error(
        await net.client.post(RESPONSES, json=body), 400, "invalid_request_error"
    )
    assert error["param"] == param, error
    assert engine.requests == []


async def test_malformed_json_and_unknown_model(net: LocalNetwork, engine: FakeEngine) -> None:
    r = await net.client.post(RESPONSES, content=b'{"model": ')
    assert_openai_error(r, 400, "invalid_json")
    r = await net.client.post(RESPONSES, json={"model": "nope", "input": "x"})
    assert_openai_error(r, 404, "model_not_found")


class _KeepingPolicy:
    prompt_logging = "full"


class _KeepingPipeline:
    """A pipeline that changes nothing, under a policy that keeps prompts."""

    policy = _KeepingPolicy()

    async def begin(self, request: Any, **_: Any) -> Any:
        class Run:
            headers: dict[str, str] = {}

            def __init__(self) -> None:
                self.request = request

            def events(self, inner: Any) -> Any:
                return inner

        return Run()


async def test_store_and_previous_response_id_where_the_policy_keeps_prompts(
    client: openai.AsyncOpenAI, net: LocalNetwork, engine: FakeEngine
) -> None:
    net.completions.pipeline = _KeepingPipeline()
    first = await client.responses.create(
        model=MODEL, input="Remember blue", instructions="Be brief", store=True
    )
    assert first.store is True
    second = await client.responses.create(
        model=MODEL, input="What did I say?", previous_response_id=first.id, store=True
    )
    history = engine.requests[-1].messages
    assert [(m.role, m.content) for m in history] == [
        ("user", "Remember blue"),
        ("assistant", TEXT),
        ("user", "What did I say?"),
    ]  # the earlier instructions are not carried over
    async with client.responses.stream(
        model=MODEL, input="And then?", previous_response_id=second.id
    ) as stream:
        await stream.get_final_response()
    assert len(engine.requests[-1].messages) == 5
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model=MODEL, input="x", previous_response_id="resp_nope")
