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


def usage_body(usage: Usage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }
    if usage.cached_tokens:  # prompt tokens the node's KV cache already held (agent loops)
        cached = min(usage.cached_tokens, usage.prompt_tokens)  # a node's claim, bounded
        body["prompt_tokens_details"] = {"cached_tokens": cached}
    return body


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

    def choice(
        self,
        index: int,
        text: str,
        finish_reason: str,
        tool_calls: list[dict[str, Any]] | None = None,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """One choice of a whole answer."""
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tool_calls:
                message["content"] = text or None
                message["tool_calls"] = tool_calls
            return {
                "index": index,
                "message": message,
                "logprobs": {"content": logprobs} if logprobs is not None else None,
                "finish_reason": finish_reason,
            }
        return {
            "index": index,
            "text": text,
            "logprobs": completion_logprobs(logprobs) if logprobs is not None else None,
            "finish_reason": finish_reason,
        }

    def full(
        self,
        text: str,
        finish_reason: str,
        usage: Usage,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        return self.body([self.choice(0, text, finish_reason, tool_calls)], usage)

    def body(self, choices: list[dict[str, Any]], usage: Usage) -> dict[str, Any]:
        """A whole answer with ``choices``."""
        body = self._envelope("chat.completion" if self.kind == "chat" else "text_completion")
        body["choices"] = choices
        body["usage"] = usage_body(usage)
        return body

    # --- streaming ---

    def _chunk(self, choice: dict[str, Any] | None) -> dict[str, Any]:
        body = self._envelope("chat.completion.chunk" if self.kind == "chat" else "text_completion")
        body["choices"] = [] if choice is None else [choice]
        return body

    def first_chunk(self, index: int = 0) -> bytes | None:
        """Chat streams open with the assistant role, as OpenAI's do."""
        if self.kind != "chat":
            return None
        return sse(
            self._chunk(
                {
                    "index": index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            )
        )

    def delta_chunk(
        self, text: str, index: int = 0, logprobs: list[dict[str, Any]] | None = None
    ) -> bytes:
        if self.kind == "chat":
            choice: dict[str, Any] = {
                "index": index,
                "delta": {"content": text},
                "logprobs": {"content": logprobs} if logprobs is not None else None,
                "finish_reason": None,
            }
        else:
            choice = {
                "index": index,
                "text": text,
                "logprobs": completion_logprobs(logprobs) if logprobs is not None else None,
                "finish_reason": None,
            }
        return sse(self._chunk(choice))

    def tool_calls_chunk(self, tool_calls_json: str, index: int = 0) -> bytes:
        """A chat delta carrying tool calls exactly as the engine streamed them: OpenAI's
        incremental format (id, type and name first, then pieces of the arguments)."""
        delta = {"tool_calls": json.loads(tool_calls_json)}
        return sse(
            self._chunk({"index": index, "delta": delta, "logprobs": None, "finish_reason": None})
        )

    def finish_chunk(self, finish_reason: str, index: int = 0) -> bytes:
        if self.kind == "chat":
            choice: dict[str, Any] = {
                "index": index,
                "delta": {},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        else:
            choice = {"index": index, "text": "", "logprobs": None, "finish_reason": finish_reason}
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


def completion_logprobs(content: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """Chat-style logprob entries in the legacy completions shape."""
    if content is None:
        return None
    offsets: list[int] = []
    position = 0
    for entry in content:
        offsets.append(position)
        position += len(str(entry.get("token", "")))
    return {
        "tokens": [e.get("token", "") for e in content],
        "token_logprobs": [e.get("logprob") for e in content],
        "top_logprobs": [
            {t.get("token", ""): t.get("logprob") for t in e.get("top_logprobs") or []}
            for e in content
        ],
        "text_offset": offsets,
    }
