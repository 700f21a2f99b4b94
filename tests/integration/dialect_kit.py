"""Test doubles for the dialect tests: an engine that calls tools, and SDK clients."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import anthropic
import openai
from fakes import FakeEngine, LocalNetwork

from lichen.engines.base import Delta, EngineEvent, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.wire.messages import GenerationRequest, ModelInfo, Usage

TOOL_MODEL = "fake-tools"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
ARGUMENT_PIECES = ['{"ci', 'ty": "Pa', 'ris"}']


class ToolEngine(FakeEngine):
    """Answers every request whose tools are set with one get_weather call, streamed in
    OpenAI's incremental format: id and name first, then the arguments in pieces."""

    def __init__(self, *, calls: int = 1, fail_mid_call: bool = False) -> None:
        super().__init__(model=TOOL_MODEL)
        self.calls = calls
        self.fail_mid_call = fail_mid_call  # the node dies after the call's first delta

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(name=TOOL_MODEL, sha256="2" * 64, engine=self.kind, tools=True)]

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[EngineEvent, None]:
        if not request.params.tools:
            async for event in super().generate(request):
                yield event
            return
        self.requests.append(request)
        for index in range(self.calls):
            head = {
                "index": index,
                "id": f"call_{index}",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
            yield Delta("", tool_calls=json.dumps([head]))
            if self.fail_mid_call:
                raise LichenError(ErrorCode.NODE_FAILED, "scripted node failure")
            for piece in ARGUMENT_PIECES:
                part = {"index": index, "function": {"arguments": piece}}
                yield Delta("", tool_calls=json.dumps([part]))
        yield Finish("tool_calls", Usage(7, 3 * self.calls))


def openai_client(net: LocalNetwork) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{net.url}/v1", api_key="unused", max_retries=0)


def anthropic_client(net: LocalNetwork) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=net.url, api_key="unused", max_retries=0)


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of a named-event SSE body (Anthropic, Responses)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


class LogprobEngine(FakeEngine):
    """Reports each token's log probability (and ``logprobs`` alternatives) when asked;
    ``garbled`` sends a report that is not JSON (a broken or hostile node)."""

    def __init__(self, *, garbled: bool = False) -> None:
        super().__init__()
        self.garbled = garbled

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[EngineEvent, None]:
        wanted = request.params.logprobs
        async for event in super().generate(request):
            if isinstance(event, Delta) and wanted is not None:
                entry = {
                    "token": event.text,
                    "logprob": -0.5,
                    "bytes": list(event.text.encode()),
                    "top_logprobs": [{"token": event.text, "logprob": -0.5, "bytes": None}][
                        :wanted
                    ],
                }
                report = "{not json" if self.garbled else json.dumps([entry])
                event = Delta(event.text, event.tokens, logprobs=report)
            yield event
