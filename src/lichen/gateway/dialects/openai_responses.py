"""``POST /v1/responses``: OpenAI's Responses dialect over the one answer path.

Answers are ``response`` objects whose ``output`` holds a ``message`` item
(``output_text``) and ``function_call`` items; streams are Responses' semantic
events (``response.created``, ``response.output_item.added``,
``response.output_text.delta``, ``response.function_call_arguments.delta``,
``response.completed`` ...), each with its ``sequence_number``.

``store`` and ``previous_response_id`` keep a conversation at the gateway, so
they are served only where the network's privacy policy keeps prompts
(``prompt_logging = "full"``); elsewhere they are refused with a 400 that says
why. An absent ``store`` means "not stored" here (OpenAI's default is to store).
Kept conversations live in memory only, bounded, and are never persisted.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from lichen.engines.base import Delta, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.answer import Call, answer
from lichen.gateway.completions import Answer, CompletionService
from lichen.gateway.dialects.openai import OpenAIRoute
from lichen.gateway.dialects.responses_schema import ResponsesRequest
from lichen.gateway.dialects.route import dialect_router
from lichen.wire.messages import ChatMessage, Usage

MAX_KEPT = 1024  # conversations kept in memory (oldest dropped first)


class ConversationStore:
    """Conversations of stored responses, by response id (memory only, bounded)."""

    def __init__(self, capacity: int = MAX_KEPT) -> None:
        self.capacity = capacity
        self._kept: OrderedDict[str, list[ChatMessage]] = OrderedDict()

    def get(self, response_id: str) -> list[ChatMessage] | None:
        return self._kept.get(response_id)

    def put(self, response_id: str, messages: list[ChatMessage]) -> None:
        self._kept[response_id] = messages
        while len(self._kept) > self.capacity:
            self._kept.popitem(last=False)


def storing_allowed(service: CompletionService) -> bool:
    """Whether the privacy policy lets the gateway keep prompts and answers."""
    policy = getattr(service.pipeline, "policy", None)
    return getattr(policy, "prompt_logging", "none") == "full"


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        # prompt tokens the node's KV cache already held (agent loops), bounded by the prompt
        "input_tokens_details": {"cached_tokens": min(usage.cached_tokens, usage.prompt_tokens)},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class ResponsesRenderer:
    """Response objects and semantic stream events for one answer."""

    media_type = "text/event-stream"

    def __init__(
        self,
        body: ResponsesRequest,
        model: str,
        on_done: Callable[[str, str, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.body = body
        self.model = model
        self.id = _new_id("resp_")
        self.created_at = int(time.time())
        self.on_done = on_done  # (response id, text, tool calls) once the answer finished
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.message: dict[str, Any] | None = None  # the open message item
        self.calls: dict[int, dict[str, Any]] = {}  # OpenAI tool-call index -> item
        self.finish_reason = "stop"

    # --- bodies ---

    def response(self, status: str, usage: Usage | None) -> dict[str, Any]:
        b = self.body
        incomplete = None
        if status == "incomplete":
            reason = "content_filter" if self.finish_reason == "content_filter" else None
            incomplete = {"reason": reason or "max_output_tokens"}
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": b.instructions,
            "max_output_tokens": b.max_output_tokens,
            "model": self.model,
            "output": self.output,
            "parallel_tool_calls": b.parallel_tool_calls is not False,
            "previous_response_id": b.previous_response_id,
            "store": bool(b.store),
            "temperature": b.temperature,
            "top_p": b.top_p,
            "text": {"format": {"type": "text"}} if b.text is None else b.text.model_dump(),
            "tool_choice": b.tool_choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in b.tools or ()],
            "truncation": "disabled",
            "metadata": b.metadata or {},
            "user": b.user,
            "usage": _usage(usage) if usage is not None else None,
        }

    def _status(self) -> str:
        return "incomplete" if self.finish_reason in ("length", "content_filter") else "completed"

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence} | payload
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

    # --- stream ---

    def start(self) -> list[bytes]:
        opening = self.response("in_progress", None)
        return [
            self._event("response.created", {"response": opening}),
            self._event("response.in_progress", {"response": opening}),
        ]

    def _open_message(self) -> list[bytes]:
        item: dict[str, Any] = {
            "type": "message",
            "id": _new_id("msg_"),
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self.message = item
        self.output.append(item)
        index = len(self.output) - 1
        part = {"type": "output_text", "text": "", "annotations": []}
        return [
            self._event("response.output_item.added", {"output_index": index, "item": item}),
            self._event(
                "response.content_part.added",
                {"item_id": item["id"], "output_index": index, "content_index": 0, "part": part},
            ),
        ]

    def _close_message(self) -> list[bytes]:
        item = self.message
        if item is None:
            return []
        self.message = None
        index = self.output.index(item)
        text = item.pop("_text", "")
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item["content"] = [part]
        item["status"] = "completed"
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return [
            self._event("response.output_text.done", where | {"text": text, "logprobs": []}),
            self._event("response.content_part.done", where | {"part": part}),
            self._event("response.output_item.done", {"output_index": index, "item": item}),
        ]

    def delta(self, index: int, delta: Delta) -> list[bytes]:
        chunks: list[bytes] = []
        if delta.text:
            if self.message is None:
                chunks += self._open_message()
            item = self.message
            assert item is not None
            item["_text"] = item.get("_text", "") + delta.text
            where = {"item_id": item["id"], "output_index": self.output.index(item)}
            chunks.append(
                self._event(
                    "response.output_text.delta",
                    where | {"content_index": 0, "delta": delta.text, "logprobs": []},
                )
            )
        for part in json.loads(delta.tool_calls) if delta.tool_calls else ():
            call_index = int(part.get("index", 0))
            function = part.get("function") or {}
            call = self.calls.get(call_index)
            if call is None:
                chunks += self._close_message()
                call = {
                    "type": "function_call",
                    "id": _new_id("fc_"),
                    "call_id": part.get("id") or _new_id("call_"),
                    "name": function.get("name") or "",
                    "arguments": "",
                    "status": "in_progress",
                }
                self.calls[call_index] = call
                self.output.append(call)
                added = {"output_index": len(self.output) - 1, "item": dict(call)}
                chunks.append(self._event("response.output_item.added", added))
            piece = function.get("arguments") or ""
            if piece:
                call["arguments"] += piece
                where = {"item_id": call["id"], "output_index": self.output.index(call)}
                chunks.append(
                    self._event("response.function_call_arguments.delta", where | {"delta": piece})
                )
        return chunks

    def finish(self, index: int, finish: Finish) -> list[bytes]:
        self.finish_reason = finish.finish_reason
        chunks = self._close_message()
        for call in self.calls.values():
            call["status"] = "completed"
            where = {"item_id": call["id"], "output_index": self.output.index(call)}
            chunks += [
                self._event(
                    "response.function_call_arguments.done",
                    where | {"arguments": call["arguments"]},
                ),
                self._event(
                    "response.output_item.done",
                    {"output_index": self.output.index(call), "item": call},
                ),
            ]
        return chunks

    def end(self, usage: Usage) -> list[bytes]:
        status = self._status()
        self._done()
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return [self._event(kind, {"response": self.response(status, usage)})]

    def error(self, error: LichenError) -> list[bytes]:
        failed = self.response("failed", None)
        failed["error"] = {"code": error.code.value, "message": error.message}
        return [
            self._event(
                "error", {"code": error.code.value, "message": error.message, "param": error.param}
            ),
            self._event("response.failed", {"response": failed}),
        ]

    # --- whole ---

    def full(self, answers: list[Answer], usage: Usage) -> dict[str, Any]:
        (whole,) = answers
        self.finish_reason = whole.finish.finish_reason
        if whole.text:
            part = {"type": "output_text", "text": whole.text, "annotations": [], "logprobs": []}
            self.output.append(
                {
                    "type": "message",
                    "id": _new_id("msg_"),
                    "status": "completed",
                    "role": "assistant",
                    "content": [part],
                }
            )
        for call in whole.tool_calls:
            function = call.get("function") or {}
            self.output.append(
                {
                    "type": "function_call",
                    "id": _new_id("fc_"),
                    "call_id": call.get("id") or _new_id("call_"),
                    "name": function.get("name", ""),
                    "arguments": function.get("arguments", ""),
                    "status": "completed",
                }
            )
        self._done()
        return self.response(self._status(), usage)

    def _done(self) -> None:
        if self.on_done is None:
            return
        text = "".join(
            part.get("text", "")
            for item in self.output
            if item["type"] == "message"
            for part in item["content"]
        )
        calls = [
            {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            for item in self.output
            if item["type"] == "function_call"
        ]
        self.on_done(self.id, text, calls)


class ResponsesRoute(OpenAIRoute):
    """OpenAI's error shape, naming Responses' parameters."""

    param_names = {"max_tokens": "max_output_tokens", "response_format": "text.format"}


def _refuse_storing(param: str) -> LichenError:
    return LichenError(
        ErrorCode.INVALID_REQUEST,
        f"{param} needs the gateway to keep this conversation, and this network's privacy "
        "policy does not allow keeping prompts or answers (prompt_logging is not 'full'); "
        "send store: false and the whole conversation in input instead",
        param=param,
    )


def responses_router(
    service: CompletionService, store: ConversationStore | None = None
) -> APIRouter:
    router = dialect_router(ResponsesRoute, tags=["OpenAI"])
    kept = store or ConversationStore()

    @router.post("/v1/responses", response_model=None, summary="Create a response")
    async def create_response(body: ResponsesRequest, request: Request) -> Response:
        storing = storing_allowed(service)
        if body.store and not storing:
            raise _refuse_storing("store")
        history: list[ChatMessage] = []
        if body.previous_response_id is not None:
            if not storing:
                raise _refuse_storing("previous_response_id")
            previous = kept.get(body.previous_response_id)
            if previous is None:
                raise LichenError(
                    ErrorCode.NOT_FOUND,
                    f"Previous response with id '{body.previous_response_id}' not found.",
                    param="previous_response_id",
                )
            history = previous
        model = service.resolve_model(body.model, tools=body.wants_tools)
        wire = body.to_wire(model, history)

        def keep(response_id: str, text: str, calls: list[dict[str, Any]]) -> None:
            said = ChatMessage(
                role="assistant", content=text, tool_calls=json.dumps(calls) if calls else None
            )
            # instructions are not carried over to the next response (as OpenAI does)
            conversation = wire.messages[1:] if body.instructions else wire.messages
            kept.put(response_id, [*conversation, said])

        renderer = ResponsesRenderer(
            body, body.model if body.model != "auto" else model, keep if body.store else None
        )
        call = Call(
            wire=wire,
            kind="chat",
            stream=body.stream,
            headers=request.headers,
            extra=body.model_extra or {},
            user=body.user,
        )
        return await answer(service, call, renderer, request)

    return router
