"""lichen.gateway.limits: every dialect's wire request is bounded before it is routed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lichen.errors import ErrorCode, LichenError
from lichen.gateway.limits import (
    MAX_SEED,
    RequestLimits,
    SchemaLimits,
    check_generation,
    check_schema,
)
from lichen.wire.messages import ChatMessage, GenerationRequest, SamplingParams

LIMITS = RequestLimits()


def chat(
    params: SamplingParams | None = None, messages: list[ChatMessage] | None = None
) -> GenerationRequest:
    return GenerationRequest(
        kind="chat",
        model="m",
        messages=messages or [ChatMessage(role="user", content="hi")],
        params=params or SamplingParams(),
    )


def refused(request: GenerationRequest, limits: RequestLimits = LIMITS) -> LichenError:
    with pytest.raises(LichenError) as caught:
        check_generation(request, limits)
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    assert caught.value.http_status == 400
    return caught.value


def schema_format(schema: Any) -> str:
    return json.dumps({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})


def test_an_ordinary_request_passes() -> None:
    params = SamplingParams(
        max_tokens=64,
        temperature=0.7,
        top_p=0.9,
        stop=["\n", "END"],
        seed=42,
        response_format=schema_format(
            {"type": "object", "properties": {"a": {"enum": ["x", "y"]}}, "required": ["a"]}
        ),
        tools=json.dumps([{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    )
    check_generation(chat(params), LIMITS)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        (SamplingParams(max_tokens=2**64), "max_tokens"),
        (SamplingParams(max_tokens=0), "max_tokens"),
        (SamplingParams(max_tokens=LIMITS.max_tokens + 1), "max_tokens"),
        (SamplingParams(seed=2**64), "seed"),
        (SamplingParams(seed=MAX_SEED + 1), "seed"),
        (SamplingParams(seed=-5), "seed"),
        (SamplingParams(temperature=float("nan")), "temperature"),
        (SamplingParams(temperature=1e308), "temperature"),
        (SamplingParams(top_p=float("inf")), "top_p"),
        (SamplingParams(presence_penalty=-3.0), "presence_penalty"),
        (SamplingParams(frequency_penalty=float("nan")), "frequency_penalty"),
    ],
)
def test_numbers_out_of_range_are_refused_naming_the_param(
    params: SamplingParams, param: str
) -> None:
    assert refused(chat(params)).param == param


def test_seed_range_is_inclusive() -> None:
    check_generation(chat(SamplingParams(seed=0)), LIMITS)
    check_generation(chat(SamplingParams(seed=MAX_SEED)), LIMITS)


def test_stop_sequences_are_bounded_in_count_and_length() -> None:
    assert refused(chat(SamplingParams(stop=[str(i) for i in range(1000)]))).param == "stop"
    assert refused(chat(SamplingParams(stop=["x" * 257]))).param == "stop"
    check_generation(chat(SamplingParams(stop=["a", "b", "c", "x" * 256])), LIMITS)


def test_message_count_and_name_lengths_are_bounded() -> None:
    many = [ChatMessage(role="user", content="hi")] * (LIMITS.max_messages + 1)
    assert refused(chat(messages=many)).param == "messages"
    named = [ChatMessage(role="user", content="hi", name="n" * 300)]
    assert refused(chat(messages=named)).param == "messages.0.name"


@pytest.mark.parametrize(
    "calls",
    [
        "[1, 2]",
        "{not json",
        '{"id": "a"}',
        '[{"id": "a", "type": "function"}]',
        '[{"id": "a", "type": "function", "function": {"name": 3, "arguments": "{}"}}]',
        '[{"id": "a", "type": "web", "function": {"name": "f", "arguments": "{}"}}]',
        '[{"id": 7, "type": "function", "function": {"name": "f", "arguments": "{}"}}]',
        '[{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]',
    ],
)
def test_malformed_assistant_tool_calls_are_refused(calls: str) -> None:
    messages = [
        ChatMessage(role="user", content="hi"),
        ChatMessage(role="assistant", content="", tool_calls=calls),
    ]
    assert refused(chat(messages=messages)).param == "messages.1.tool_calls"


def test_well_formed_tool_calls_pass() -> None:
    calls = '[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]'
    messages = [
        ChatMessage(role="user", content="hi"),
        ChatMessage(role="assistant", content="", tool_calls=calls),
        ChatMessage(role="tool", content="42", tool_call_id="c1"),
    ]
    check_generation(chat(messages=messages), LIMITS)


def test_the_20000_value_enum_schema_is_refused() -> None:
    schema = {"enum": [f"value-{i:05d}" for i in range(20_000)]}
    error = refused(chat(SamplingParams(response_format=schema_format(schema))))
    assert error.param == "response_format"


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"enum": list(range(65))}, "enum"),
        (
            {"type": "object", "properties": {f"p{i}": {"enum": [1, 2, 3]} for i in range(22)}},
            "enum",
        ),
        ({"type": "object", "properties": {f"p{i}": {} for i in range(65)}}, "properties"),
        ({"anyOf": [{"type": "string"}] * 17}, "anyOf"),
        ({"oneOf": [{"type": "string"}] * 17}, "oneOf"),
        ({"type": "array", "maxItems": 100_000}, "maxItems"),
        ({"type": "string", "minLength": 1e308}, "minLength"),
        ({"type": "string", "maxLength": -1}, "maxLength"),
        ({"type": "string", "pattern": "a" * 257}, "pattern"),
        ({"type": "object", "patternProperties": {"b" * 300: {}}}, "pattern"),
        ({"$ref": "https://example.com/schema.json"}, "$ref"),
        ({"type": "object", "required": [f"r{i}" for i in range(1100)]}, "nodes"),
        ({"enum": ["x" * 1000] * 20}, "bytes"),
    ],
)
def test_complex_schemas_are_refused(schema: dict[str, Any], words: str) -> None:
    error = refused(chat(SamplingParams(response_format=schema_format(schema))))
    assert words in error.message
    assert error.param == "response_format"


def test_deep_nesting_is_refused_without_recursion() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(5000):
        schema = {"type": "object", "properties": {"a": schema}}
    with pytest.raises(LichenError):
        check_schema(schema, SchemaLimits(max_bytes=10**9, max_nodes=10**9), "response_format")


def test_deeply_nested_json_text_is_a_400_not_a_crash() -> None:
    deep = '{"type": "json_schema", "json_schema": {"schema": ' + "[" * 5_000 + "]" * 5_000
    error = refused(chat(SamplingParams(response_format=deep + "}}")))
    assert error.param == "response_format"
    calls = [ChatMessage(role="assistant", content="", tool_calls="[" * 100_000)]
    assert refused(chat(messages=calls)).param == "messages.0.tool_calls"


def test_schema_in_json_object_and_bad_wrappers() -> None:
    too_many = json.dumps({"type": "json_object", "schema": {"enum": list(range(100))}})
    assert refused(chat(SamplingParams(response_format=too_many))).param == "response_format"
    bad = json.dumps({"type": "json_schema", "json_schema": "not an object"})
    assert refused(chat(SamplingParams(response_format=bad))).param == "response_format"
    check_generation(chat(SamplingParams(response_format='{"type": "json_object"}')), LIMITS)


def test_property_names_that_look_like_keywords_are_not_mistaken() -> None:
    schema = {
        "type": "object",
        "properties": {"enum": {"type": "string"}, "pattern": {"type": "string"}},
    }
    check_generation(chat(SamplingParams(response_format=schema_format(schema))), LIMITS)


def test_tools_are_bounded_in_size_and_schema() -> None:
    big = json.dumps(
        [{"type": "function", "function": {"name": "f", "description": "x" * 200_000}}]
    )
    assert refused(chat(SamplingParams(tools=big))).param == "tools"
    complex_tool = json.dumps(
        [{"type": "function", "function": {"name": "f", "parameters": {"enum": list(range(99))}}}]
    )
    assert refused(chat(SamplingParams(tools=complex_tool))).param == "tools"
    assert refused(chat(SamplingParams(tools="[1]"))).param == "tools"


def test_limits_follow_settings() -> None:
    from lichen.config import Settings

    limits = RequestLimits.from_settings(Settings(limit_stop_sequences=1, schema_max_enum=2))
    assert refused(chat(SamplingParams(stop=["a", "b"])), limits).param == "stop"
    small_enum = schema_format({"enum": [1, 2, 3]})
    assert refused(chat(SamplingParams(response_format=small_enum)), limits).param
