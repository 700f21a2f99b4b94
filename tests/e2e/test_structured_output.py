"""Structured output from the real SmolLM2: JSON mode and JSON schemas (llama.cpp grammars).

``response_format`` passes through the gateway and the wire to llama.cpp, which
turns a schema into a grammar, so even a 135M-parameter model can only emit
JSON of the requested shape. Tools are served the same way (generic tool calls):
SmolLM2's chat template has no tool support of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from clients import NO_ANONYMOUS_LIMITS, anonymous_openai
from harness import DEFAULT_MODEL, Harness, LichenProcess
from openai import OpenAI

pytestmark = pytest.mark.e2e

PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "city": {"type": "string", "enum": ["Paris", "Tokyo", "Lima"]},
        "languages": {
            "type": "array",
            "items": {"type": "string", "maxLength": 16},
            "minItems": 1,
            "maxItems": 3,
        },
    },
    "required": ["name", "age", "city", "languages"],
    "additionalProperties": False,
}


def check_person(value: Any) -> None:
    """A hand check of PERSON_SCHEMA (no jsonschema dependency)."""
    assert isinstance(value, dict), value
    assert set(value) == {"name", "age", "city", "languages"}, value
    assert isinstance(value["name"], str) and len(value["name"]) <= 24
    assert isinstance(value["age"], int) and not isinstance(value["age"], bool)
    assert 0 <= value["age"] <= 150
    assert value["city"] in ("Paris", "Tokyo", "Lima")
    langs = value["languages"]
    assert isinstance(langs, list) and 1 <= len(langs) <= 3
    assert all(isinstance(x, str) and len(x) <= 16 for x in langs)


@pytest.fixture(scope="module")
def up(module_harness: Harness) -> LichenProcess:
    return module_harness.up(env=NO_ANONYMOUS_LIMITS)


@pytest.fixture
def client(up: LichenProcess) -> Iterator[OpenAI]:
    with anonymous_openai(f"{up.url}/v1") as c:
        yield c


def _ask(client: OpenAI, prompt: str, response_format: Any, **extra: Any) -> Any:
    kwargs: dict[str, Any] = {"max_tokens": 200, "temperature": 0} | extra
    return client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": prompt}],
        response_format=response_format,
        **kwargs,
    )


def test_json_mode_yields_a_json_object(client: OpenAI) -> None:
    prompt = "Give me a JSON object with keys name and age."
    reply = _ask(client, prompt, {"type": "json_object"})
    text = reply.choices[0].message.content
    assert text is not None
    if reply.choices[0].finish_reason == "length":
        pytest.fail(f"the answer was cut at max_tokens: {text!r}")
    assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_yields_schema_valid_json(client: OpenAI, stream: bool) -> None:
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True},
    }
    prompt = "Invent a person: name, age, city and the languages they speak. Answer in JSON."
    if stream:
        chunks = _ask(client, prompt, response_format, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        reply = _ask(client, prompt, response_format)
        assert reply.choices[0].finish_reason == "stop"
        text = reply.choices[0].message.content or ""
    check_person(json.loads(text))


def test_the_schema_constrains_even_a_contrary_prompt(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "boolean"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    reply = _ask(
        client,
        "Write a poem about the sea. Do not use JSON.",
        {"type": "json_schema", "json_schema": {"name": "yes_no", "schema": schema}},
    )
    value = json.loads(reply.choices[0].message.content or "")
    assert set(value) == {"answer"} and isinstance(value["answer"], bool)


def test_a_bad_response_format_is_a_400(up: LichenProcess) -> None:
    r = httpx.post(
        f"{up.url}/v1/chat/completions",
        json={
            "model": DEFAULT_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "xml"},
        },
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "response_format"


def test_tools_are_served_as_generic_calls_without_a_native_template(client: OpenAI) -> None:
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    reply = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=tools,
        tool_choice="required",
        max_tokens=100,
        temperature=0,
    )
    calls = reply.choices[0].message.tool_calls or []
    assert calls and reply.choices[0].finish_reason == "tool_calls"
    assert calls[0].type == "function" and calls[0].function.name == "get_weather"
    assert isinstance(json.loads(calls[0].function.arguments), dict)
    # tool_choice "none": the tools are dropped and the model answers in text
    reply = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Say hi"}],
        tools=tools,
        tool_choice="none",
        max_tokens=8,
    )
    assert reply.choices[0].message.content
