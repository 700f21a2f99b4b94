"""Bounds on what one generation request may ask for, checked before it is routed.

Every API dialect (OpenAI chat and completions, Ollama, Responses) turns its body
into one :class:`~lichen.wire.messages.GenerationRequest`;
:func:`check_generation` checks that wire request, so each dialect refuses the
same things the same way, with a 400 naming the OpenAI parameter. What it
bounds:

- integers the engine cannot take or that would run for ever: ``max_tokens``
  (1..``max_tokens``, and no more than the largest context a node serving the
  model offers), ``seed`` (0..2**32-1, llama.cpp's seed width);
- floats: finite, in OpenAI's ranges (``temperature`` 0..2, ``top_p`` (0, 1],
  penalties -2..2);
- ``stop``: at most ``max_stop`` strings of at most ``max_stop_chars`` each;
- messages: how many, and the length of names and tool-call ids;
- assistant ``tool_calls``: a list of well-formed tool-call objects;
- ``tools``: JSON size, and each function's ``parameters`` schema as below;
- ``response_format`` JSON schemas: a node compiles them into a grammar inside
  its engine loop, where the cost grows faster than the schema (a 20,000-value
  ``enum`` stalled a node for minutes), so the schema's size and complexity are
  bounded: total nodes, nesting depth, ``enum`` values and object properties
  (all of the schema's together), ``anyOf``/``oneOf``/
  ``allOf`` alternatives, repetition bounds (``minItems``/``maxItems``/
  ``minLength``/``maxLength``/``minProperties``/``maxProperties``), ``pattern``
  length, and only local ``$ref``\\ s (:mod:`lichen.engines.schema_limits`, which
  a node's engine applies again).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lichen.engines.schema_limits import SchemaLimits, check_schema
from lichen.errors import ErrorCode, LichenError
from lichen.wire.messages import ChatMessage, GenerationRequest

if TYPE_CHECKING:
    from lichen.config import Settings
    from lichen.tracker.registry import Registry

MAX_SEED = 2**32 - 1  # llama.cpp seeds are 32-bit; larger values are refused, not wrapped


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """The bounds :func:`check_generation` applies (settings: ``docs/configuration.md``)."""

    max_tokens: int = 32_768  # largest max_tokens / max_completion_tokens / num_predict
    max_stop: int = 4  # stop strings (OpenAI's limit, applied to every dialect)
    max_stop_chars: int = 256  # characters of one stop string
    max_messages: int = 1_024  # messages of one chat
    max_name_chars: int = 256  # a message's name / tool_call_id
    max_tool_calls: int = 128  # tool calls of one assistant message
    max_tools_bytes: int = 131_072  # the tools array as JSON text
    schema: SchemaLimits = dataclasses.field(default_factory=SchemaLimits)

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        return cls(
            max_tokens=settings.limit_max_tokens,
            max_stop=settings.limit_stop_sequences,
            max_stop_chars=settings.limit_stop_chars,
            max_messages=settings.limit_messages,
            max_tools_bytes=settings.limit_tools_bytes,
            schema=SchemaLimits(
                max_bytes=settings.schema_max_bytes,
                max_nodes=settings.schema_max_nodes,
                max_depth=settings.schema_max_depth,
                max_enum=settings.schema_max_enum,
                max_properties=settings.schema_max_properties,
                max_alternatives=settings.schema_max_alternatives,
                max_repetition=settings.schema_max_repetition,
                max_pattern_chars=settings.schema_max_pattern_chars,
            ),
        )


def _invalid(message: str, param: str) -> LichenError:
    return LichenError(ErrorCode.INVALID_REQUEST, message, param=param)


def largest_context(registry: Registry | None, model: str) -> int:
    """The largest per-request context any node serving ``model`` offers (0 = unknown)."""
    if registry is None:
        return 0
    contexts = [
        info.context
        for conn in registry
        for info in conn.state.manifest.models
        if info.name == model and info.context > 0
    ]
    return max(contexts, default=0)


def check_generation(
    request: GenerationRequest, limits: RequestLimits, registry: Registry | None = None
) -> None:
    """Raise ``INVALID_REQUEST`` (400, ``param`` set) if ``request`` exceeds ``limits``.

    ``registry`` (the live nodes) lets ``max_tokens`` be checked against the
    model's context as well.
    """
    _check_numbers(request, limits, largest_context(registry, request.model))
    _check_stop(request.params.stop, limits)
    _check_messages(request.messages, limits)
    params = request.params
    if params.tools is not None:
        _check_tools(params.tools, limits)
    if params.response_format is not None:
        _check_response_format(params.response_format, limits.schema)


GRAMMAR_FREE_BYTES = 4096  # JSON schema text a request may carry at the price of one request
GRAMMAR_BYTES_PER_REQUEST = 1024  # each started KiB past that counts as one more request


def grammar_weight(request: GenerationRequest) -> int:
    """How many requests beyond one ``request`` counts against per-minute limits.

    Answers constrained by a grammar (``response_format``, tools) can hold a node's
    single engine loop far longer than plain ones: an admitted worst-case schema took
    0.1-3.6 s per request there (docs/benchmarks.md, ``bench/hostile.py``) while every
    other request waited. Large schemas therefore spend more of the caller's budget:
    each started KiB of schema text past :data:`GRAMMAR_FREE_BYTES` is one more
    request. Ordinary structured output and an agent's tool list stay at one.
    """
    p = request.params
    size = sum(len(text.encode()) for text in (p.response_format, p.tools) if text)
    return max(0, math.ceil((size - GRAMMAR_FREE_BYTES) / GRAMMAR_BYTES_PER_REQUEST))


def _check_numbers(request: GenerationRequest, limits: RequestLimits, context: int) -> None:
    p = request.params
    if p.max_tokens is not None:
        if not 1 <= p.max_tokens <= limits.max_tokens:
            raise _invalid(f"max_tokens must be between 1 and {limits.max_tokens}", "max_tokens")
        if context and p.max_tokens > context:
            raise _invalid(
                f"max_tokens is too large: {p.max_tokens}; the model `{request.model}` "
                f"supports at most {context} tokens per request on this network",
                "max_tokens",
            )
    if p.seed is not None and not 0 <= p.seed <= MAX_SEED:
        raise _invalid(f"seed must be between 0 and {MAX_SEED}", "seed")
    ranges: tuple[tuple[str, float | None, float, float], ...] = (
        ("temperature", p.temperature, 0.0, 2.0),
        ("top_p", p.top_p, 0.0, 1.0),
        ("presence_penalty", p.presence_penalty, -2.0, 2.0),
        ("frequency_penalty", p.frequency_penalty, -2.0, 2.0),
    )
    for name, value, low, high in ranges:
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            raise _invalid(f"{name} must be a number between {low:g} and {high:g}", name)


def _check_stop(stop: list[str], limits: RequestLimits) -> None:
    if len(stop) > limits.max_stop:
        raise _invalid(f"stop may hold at most {limits.max_stop} sequences", "stop")
    for sequence in stop:
        if len(sequence) > limits.max_stop_chars:
            raise _invalid(
                f"each stop sequence may be at most {limits.max_stop_chars} characters", "stop"
            )


def _check_messages(messages: list[ChatMessage], limits: RequestLimits) -> None:
    if len(messages) > limits.max_messages:
        raise _invalid(f"a chat may hold at most {limits.max_messages} messages", "messages")
    for index, message in enumerate(messages):
        for field, value in (("name", message.name), ("tool_call_id", message.tool_call_id)):
            if value is not None and len(value) > limits.max_name_chars:
                raise _invalid(
                    f"{field} may be at most {limits.max_name_chars} characters",
                    f"messages.{index}.{field}",
                )
        if message.tool_calls is not None:
            _check_tool_calls(message.tool_calls, limits, f"messages.{index}.tool_calls")


def _check_tool_calls(text: str, limits: RequestLimits, param: str) -> None:
    """An assistant's ``tool_calls``: ``[{"id", "type": "function", "function": {...}}]``."""
    try:
        calls = json.loads(text)
    except (ValueError, RecursionError):
        raise _invalid("tool_calls must be a JSON array of tool calls", param) from None
    if not isinstance(calls, list):
        raise _invalid("tool_calls must be an array of tool calls", param)
    if len(calls) > limits.max_tool_calls:
        raise _invalid(f"at most {limits.max_tool_calls} tool calls per message", param)
    shape = (
        "each tool call must be {'id': str, 'type': 'function', "
        "'function': {'name': str, 'arguments': str}}"
    )
    for call in calls:
        if not isinstance(call, dict):
            raise _invalid(shape, param)
        function = call.get("function")
        if (
            not isinstance(call.get("id", ""), str)
            or call.get("type", "function") != "function"
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments", ""), str)
            or len(function["name"]) > limits.max_name_chars
        ):
            raise _invalid(shape, param)


def _check_tools(text: str, limits: RequestLimits) -> None:
    if len(text.encode()) > limits.max_tools_bytes:
        raise _invalid(f"tools may be at most {limits.max_tools_bytes} bytes of JSON", "tools")
    try:
        tools = json.loads(text)
    except (ValueError, RecursionError):
        raise _invalid("tools must be a JSON array", "tools") from None
    if not isinstance(tools, list):
        raise _invalid("tools must be an array", "tools")
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            raise _invalid("each tool must be {'type': 'function', 'function': {...}}", "tools")
        parameters = function.get("parameters")
        if parameters is not None:
            check_schema(parameters, limits.schema, "tools")


def _check_response_format(text: str, limits: SchemaLimits) -> None:
    param = "response_format"
    if len(text.encode()) > limits.max_bytes + 1024:  # the schema plus its small wrapper
        raise _invalid(f"response_format may be at most {limits.max_bytes} bytes", param)
    try:
        fmt = json.loads(text)
    except (ValueError, RecursionError):
        raise _invalid("response_format must be a JSON object", param) from None
    if not isinstance(fmt, dict):
        raise _invalid("response_format must be an object", param)
    schema: Any = fmt.get("schema")  # llama.cpp's {"type": "json_object", "schema": ...}
    wrapper = fmt.get("json_schema")
    if isinstance(wrapper, dict) and "schema" in wrapper:
        schema = wrapper["schema"]
    elif fmt.get("type") == "json_schema" and wrapper is not None:
        raise _invalid("response_format.json_schema must be an object with a schema", param)
    if schema is not None:
        check_schema(schema, limits, param)
