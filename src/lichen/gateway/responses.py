"""OpenAI response bodies and stream chunks for chat and text completions."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from lichen.wire.messages import Usage

_json = msgspec.json.Encoder()


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def sse(payload: Any) -> bytes:
    return b"data: " + _json.encode(payload) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


@dataclass
class ResponseShape:
    """Builds the bodies for one response (one id, one timestamp, one model name)."""

    kind: str  # "chat" | "completion"
    model: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.id:
            prefix = "chatcmpl-" if self.kind == "chat" else "cmpl-"
            self.id = prefix + secrets.token_urlsafe(18)

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    # --- non-streaming ---

    def full(
        self,
        text: str,
        finish_reason: str,
        usage: Usage,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tool_calls:
                message["content"] = text or None
                message["tool_calls"] = tool_calls
            choice: dict[str, Any] = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            body = self._envelope("chat.completion")
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            body = self._envelope("text_completion")
        body["choices"] = [choice]
        body["usage"] = usage_body(usage)
        return body

    # --- streaming ---

    def _chunk(self, choice: dict[str, Any] | None) -> dict[str, Any]:
        body = self._envelope("chat.completion.chunk" if self.kind == "chat" else "text_completion")
        body["choices"] = [] if choice is None else [choice]
        return body

    def first_chunk(self) -> bytes | None:
        """Chat streams open with the assistant role, as OpenAI's do."""
        if self.kind != "chat":
            return None
        return sse(
            self._chunk(
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            )
        )

    def delta_chunk(self, text: str) -> bytes:
        if self.kind == "chat":
            choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": None}
        return sse(self._chunk(choice))

    def tool_calls_chunk(self, tool_calls_json: str) -> bytes:
        """A chat delta carrying tool calls exactly as the engine streamed them."""
        delta = {"tool_calls": json.loads(tool_calls_json)}
        return sse(self._chunk({"index": 0, "delta": delta, "finish_reason": None}))

    def finish_chunk(self, finish_reason: str) -> bytes:
        if self.kind == "chat":
            choice: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": finish_reason}
        return sse(self._chunk(choice))

    def usage_chunk(self, usage: Usage) -> bytes:
        body = self._chunk(None)
        body["usage"] = usage_body(usage)
        return sse(body)


def merge_tool_calls(deltas: list[str]) -> list[dict[str, Any]]:
    """Whole tool calls from streamed ``tool_calls`` deltas (JSON texts), merged by index.

    The first delta of a call carries its id, type and function name; later ones
    append to ``function.arguments``.
    """
    calls: dict[int, dict[str, Any]] = {}
    for raw in deltas:
        for part in json.loads(raw):
            index = int(part.get("index", len(calls)))
            call = calls.setdefault(
                index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if part.get("id"):
                call["id"] = part["id"]
            if part.get("type"):
                call["type"] = part["type"]
            function = part.get("function") or {}
            if function.get("name"):
                call["function"]["name"] = function["name"]
            call["function"]["arguments"] += function.get("arguments") or ""
    return [calls[i] for i in sorted(calls)]
