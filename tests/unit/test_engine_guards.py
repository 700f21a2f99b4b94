"""A node protects its engine loop: grammar budget, stall watchdog (issue 10).

``LlamaCppEngine`` runs here on a scripted stand-in for ``xllamacpp.Server``
(its ``handle_*`` calls block a worker thread and call back per chunk, like the
real one), so the engine's own code is what is tested.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lichen.engines.base import Delta, Finish
from lichen.engines.composite import CompositeEngine
from lichen.engines.grammar_guard import GrammarGuard
from lichen.engines.llamacpp import LlamaCppEngine, LlamaModelConfig, _Loaded
from lichen.engines.schema_limits import SchemaLimits
from lichen.errors import ErrorCode, LichenError
from lichen.wire.messages import ChatMessage, GenerationRequest, SamplingParams


class ScriptedServer:
    """Blocks each call until ``release`` is set, then streams one chunk and stops."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def handle_chat_completions(self, body: dict[str, Any], callback: Any) -> None:
        self.calls += 1
        self.release.wait(30)
        callback({"choices": [{"delta": {"content": "ok"}, "finish_reason": None}]})
        callback(
            {
                "choices": [{"delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            }
        )


def _engine(server: ScriptedServer, **kwargs: Any) -> LlamaCppEngine:
    config = LlamaModelConfig(name="m", path=Path("m.gguf"), sha256="0" * 64, parallel=2)
    return LlamaCppEngine({"m": _Loaded(config, server)}, **kwargs)


def _request(response_format: object = None, tools: object = None) -> GenerationRequest:
    return GenerationRequest(
        kind="chat",
        model="m",
        messages=[ChatMessage(role="user", content="hi")],
        params=SamplingParams(
            response_format=json.dumps(response_format) if response_format is not None else None,
            tools=json.dumps(tools) if tools is not None else None,
        ),
    )


def _schema_format(schema: object) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


async def _collect(engine: LlamaCppEngine, request: GenerationRequest) -> list[Any]:
    return [event async for event in engine.generate(request)]


async def test_a_stuck_engine_loop_is_reported_stalled_and_recovers() -> None:
    server = ScriptedServer()
    engine = _engine(server, stall_s=0.2)
    assert not engine.load().stalled  # idle is not stalled
    job = asyncio.create_task(_collect(engine, _request()))
    deadline = time.monotonic() + 10
    while not engine.load().stalled:
        assert time.monotonic() < deadline, "never reported stalled"
        await asyncio.sleep(0.05)
    server.release.set()
    events = await asyncio.wait_for(job, 10)
    assert isinstance(events[0], Delta) and isinstance(events[-1], Finish)
    assert not engine.load().stalled
    await engine.close()


async def test_composite_engine_passes_the_stall_on() -> None:
    server = ScriptedServer()
    engine = _engine(server, stall_s=0.1)
    composite = CompositeEngine([engine])
    job = asyncio.create_task(_collect(engine, _request()))
    deadline = time.monotonic() + 10
    while not composite.load().stalled:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    server.release.set()
    await asyncio.wait_for(job, 10)
    await engine.close()


@pytest.mark.parametrize(
    ("response_format", "tools", "param"),
    [
        (_schema_format({"enum": [f"v{i}" for i in range(20_000)]}), None, "response_format"),
        (_schema_format({"anyOf": [{"type": "integer"}] * 500}), None, "response_format"),
        (
            {"type": "json_object", "schema": {"type": "string", "maxLength": 10**9}},
            None,
            "response_format",
        ),
        (
            None,
            [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {
                            "type": "object",
                            "properties": {"a": {"enum": list(range(5000))}},
                        },
                    },
                }
            ],
            "tools",
        ),
    ],
)
async def test_costly_schemas_are_refused_before_the_engine_loop(
    response_format: object, tools: object, param: str
) -> None:
    server = ScriptedServer()
    engine = _engine(server, guard=GrammarGuard(limits=SchemaLimits()))
    with pytest.raises(LichenError) as caught:
        await _collect(engine, _request(response_format, tools))
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    assert caught.value.param == param
    assert server.calls == 0  # llama.cpp never saw it
    assert engine.load().free_slots == 2  # nothing leaked
    await engine.close()


async def test_conversion_over_budget_is_refused() -> None:
    release = threading.Event()

    def slow_converter(_schema: str) -> str:
        release.wait(30)
        return ""

    server = ScriptedServer()
    guard = GrammarGuard(budget_s=0.1, convert=slow_converter)
    engine = _engine(server, guard=guard)
    try:
        with pytest.raises(LichenError) as caught:
            await _collect(engine, _request(_schema_format({"type": "string"})))
        assert caught.value.param == "response_format"
        assert "too costly" in caught.value.message
        assert server.calls == 0
    finally:
        release.set()
        await engine.close()


@pytest.mark.parametrize("bad", ["{not json", "[1, 2", '"\\ud800'])
async def test_malformed_format_text_is_a_typed_error(bad: str) -> None:
    guard = GrammarGuard()
    request = GenerationRequest(
        kind="chat", model="m", params=SamplingParams(response_format=bad, tools=bad)
    )
    with pytest.raises(LichenError) as caught:
        await guard.check(request)
    assert caught.value.code is ErrorCode.INVALID_REQUEST


async def test_acceptable_schema_reaches_the_engine() -> None:
    pytest.importorskip("xllamacpp")
    server = ScriptedServer()
    server.release.set()
    engine = _engine(server, guard=GrammarGuard())
    schema = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}}
    events = await _collect(engine, _request(_schema_format(schema)))
    assert server.calls == 1 and isinstance(events[-1], Finish)
    await engine.close()
