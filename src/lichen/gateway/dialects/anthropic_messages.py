"""``POST /v1/messages``: Anthropic's Messages dialect over the one answer path.

Answers are Anthropic ``message`` objects (text and ``tool_use`` blocks,
``stop_reason``, ``usage``); streams are Anthropic's named SSE events
(``message_start``, ``content_block_start`` / ``_delta`` / ``_stop``,
``message_delta``, ``message_stop``), with tool arguments streamed as
``input_json_delta`` pieces as the node produces them. Errors are Anthropic's
``{"type": "error", "error": {"type", "message"}}`` with a ``request-id``
header. ``x-api-key`` is accepted like ``Authorization: Bearer``.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.responses import Response

from lichen.engines.base import Delta, Finish
from lichen.errors import LichenError
from lichen.gateway.answer import Call, answer
from lichen.gateway.completions import Answer, CompletionService
from lichen.gateway.dialects.anthropic_schema import MessagesRequest
from lichen.gateway.dialects.route import DialectRoute, dialect_router
from lichen.wire.messages import Usage

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def _request_id() -> str:
    return "req_" + secrets.token_urlsafe(18)


def anthropic_error_body(error: LichenError) -> dict[str, Any]:
    status = error.http_status
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


class AnthropicRoute(DialectRoute):
    """Anthropic's error shape and headers; ``x-api-key`` becomes the bearer key."""

    param_names = {"stop": "stop_sequences"}

    @staticmethod
    def render_error(error: LichenError) -> Response:
        headers = error.headers | {"request-id": _request_id()}
        return JSONResponse(anthropic_error_body(error), error.http_status, headers=headers)

    @staticmethod
    def prepare(request: Request) -> None:
        key = request.headers.get("x-api-key")
        if key and "authorization" not in request.headers:
            raw = [*request.scope["headers"], (b"authorization", f"Bearer {key}".encode())]
            request.scope["headers"] = raw
            request._headers = Headers(scope=request.scope)


def _usage(usage: Usage) -> dict[str, int]:
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}


def stop_reason(finish_reason: str) -> str:
    return STOP_REASONS.get(finish_reason, "end_turn")


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class AnthropicRenderer:
    """Anthropic ``message`` bodies and stream events for one answer."""

    media_type = "text/event-stream"

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = "msg_" + secrets.token_urlsafe(18)
        self.block = -1  # index of the open content block (-1: none yet)
        self.open_kind = ""  # "text" | "tool_use" | ""
        self.tools: dict[int, int] = {}  # OpenAI tool-call index -> content block index
        self.finish_reason = "stop"

    def _message(self, content: list[dict[str, Any]], reason: str | None, usage: Usage) -> Any:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.completion_tokens,
            },
        }

    def start(self) -> list[bytes]:
        message = self._message([], None, Usage(0, 0))
        return [_event("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> list[bytes]:
        if not self.open_kind:
            return []
        self.open_kind = ""
        return [_event("content_block_stop", {"type": "content_block_stop", "index": self.block})]

    def _open(self, block: dict[str, Any]) -> list[bytes]:
        chunks = self._close()
        self.block += 1
        self.open_kind = str(block["type"])
        payload = {"type": "content_block_start", "index": self.block, "content_block": block}
        return [*chunks, _event("content_block_start", payload)]

    def _delta(self, delta: dict[str, Any]) -> bytes:
        payload = {"type": "content_block_delta", "index": self.block, "delta": delta}
        return _event("content_block_delta", payload)

    def delta(self, index: int, delta: Delta) -> list[bytes]:
        chunks: list[bytes] = []
        if delta.text:
            if self.open_kind != "text":
                chunks += self._open({"type": "text", "text": ""})
            chunks.append(self._delta({"type": "text_delta", "text": delta.text}))
        for part in json.loads(delta.tool_calls) if delta.tool_calls else ():
            call = int(part.get("index", 0))
            function = part.get("function") or {}
            if call not in self.tools:
                self.tools[call] = self.block + 1
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": part.get("id") or f"toolu_{secrets.token_urlsafe(12)}",
                    "name": function.get("name") or "",
                    "input": {},
                }
                chunks += self._open(block)
            arguments = function.get("arguments") or ""
            if arguments and self.tools[call] == self.block:
                chunks.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return chunks

    def finish(self, index: int, finish: Finish) -> list[bytes]:
        self.finish_reason = finish.finish_reason
        return self._close()

    def end(self, usage: Usage) -> list[bytes]:
        reason = "tool_use" if self.tools else stop_reason(self.finish_reason)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": {
                "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.completion_tokens,
            },
        }
        return [_event("message_delta", delta), _event("message_stop", {"type": "message_stop"})]

    def error(self, error: LichenError) -> list[bytes]:
        return [_event("error", anthropic_error_body(error))]

    def full(self, answers: list[Answer], usage: Usage) -> dict[str, Any]:
        (whole,) = answers
        content: list[dict[str, Any]] = []
        if whole.text:
            content.append({"type": "text", "text": whole.text})
        for call in whole.tool_calls:
            function = call.get("function") or {}
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id") or f"toolu_{secrets.token_urlsafe(12)}",
                    "name": function.get("name", ""),
                    "input": _tool_input(function.get("arguments", "")),
                }
            )
        reason = "tool_use" if whole.tool_calls else stop_reason(whole.finish.finish_reason)
        return dict(self._message(content, reason, usage))


def messages_router(service: CompletionService) -> APIRouter:
    router = dialect_router(AnthropicRoute, tags=["Anthropic"])

    @router.post("/v1/messages", response_model=None, summary="Create a message (Anthropic)")
    async def messages(body: MessagesRequest, request: Request) -> Response:
        model = service.resolve_model(body.model, tools=body.wants_tools)
        renderer = AnthropicRenderer(body.model if body.model != "auto" else model)
        call = Call(
            wire=body.to_wire(model),
            kind="chat",
            stream=body.stream,
            headers=request.headers,
            extra=body.model_extra or {},
            user=body.metadata.user_id if body.metadata else None,
        )
        response = await answer(service, call, renderer, request)
        response.headers["request-id"] = _request_id()
        return response

    return router
