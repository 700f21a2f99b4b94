"""``/v1/chat/completions`` and ``/v1/completions``: validate, route, answer.

The first event is awaited before the response starts, so a request that cannot
be served gets a real status code (404, 400, 503) instead of a 200 carrying an
error. After that, a failure that even resume cannot fix ends the stream with an
OpenAI-shaped error event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.responses import Response

from lichen.engines.base import Delta, EngineEvent, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.errors import error_response, from_validation
from lichen.gateway.responses import SSE_DONE, ResponseShape, sse
from lichen.gateway.schemas import ChatCompletionRequest, CompletionRequest
from lichen.routing.router import Router, RouteTrace
from lichen.routing.scheduler import Scheduler
from lichen.storage.repositories import RequestRecord
from lichen.wire.messages import Usage

log = logging.getLogger(__name__)

RecordUsage = Callable[[RequestRecord], Awaitable[None]]

NODE_HEADER = "x-lichen-node"


@dataclass
class _Outcome:
    """Metadata collected while answering; becomes a RequestRecord."""

    kind: str
    model: str
    stream: bool
    started: float
    status: int = 200
    ttft_ms: int | None = None
    usage: Usage = field(default_factory=lambda: Usage(0, 0))
    node: str | None = None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise LichenError(
            ErrorCode.REQUEST_TOO_LARGE, f"request body exceeds the limit of {limit} bytes"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise LichenError(
                ErrorCode.REQUEST_TOO_LARGE, f"request body exceeds the limit of {limit} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


class CompletionService:
    """Answers OpenAI completion requests by routing them over the network."""

    def __init__(
        self,
        *,
        router: Router,
        scheduler: Scheduler,
        max_request_bytes: int,
        timeout_s: float,
        record: RecordUsage | None = None,
    ) -> None:
        self.router = router
        self.scheduler = scheduler
        self.max_request_bytes = max_request_bytes
        self.timeout_s = timeout_s
        self.record = record

    async def chat(self, request: Request) -> Response:
        return await self._handle(request, ChatCompletionRequest, "chat")

    async def completions(self, request: Request) -> Response:
        return await self._handle(request, CompletionRequest, "completion")

    async def _handle(
        self, request: Request, schema: type[ChatCompletionRequest | CompletionRequest], kind: str
    ) -> Response:
        started = time.perf_counter()
        outcome = _Outcome(kind=kind, model="", stream=False, started=started)
        try:
            body = await read_body(request, self.max_request_bytes)
            try:
                parsed = schema.model_validate_json(body)
            except ValidationError as exc:
                raise from_validation(exc) from None
            model = self.scheduler.resolve_model(parsed.model)
            outcome.model, outcome.stream = model, parsed.stream
            wire = parsed.to_wire(model)
            deadline = asyncio.get_running_loop().time() + self.timeout_s
            trace = RouteTrace()
            events = self.router.stream(wire, deadline_s=self.timeout_s, trace=trace)
            try:
                async with asyncio.timeout_at(deadline):
                    first = await anext(events)
            except BaseException:
                await events.aclose()
                raise
            outcome.ttft_ms = int((time.perf_counter() - started) * 1000)
        except TimeoutError:
            return await self._fail(outcome, LichenError(ErrorCode.TIMEOUT, "request timed out"))
        except LichenError as error:
            return await self._fail(outcome, error)
        except StopAsyncIteration:
            return await self._fail(outcome, LichenError(ErrorCode.NODE_FAILED, "empty answer"))

        shape = ResponseShape(kind=kind, model=parsed.model if parsed.model != "auto" else model)
        outcome.node = trace.nodes[-1] if trace.nodes else None
        headers = {NODE_HEADER: outcome.node} if outcome.node else {}
        if parsed.stream:
            return StreamingResponse(
                self._stream(shape, first, events, deadline, parsed.include_usage, outcome),
                media_type="text/event-stream",
                headers=headers | {"cache-control": "no-cache", "x-accel-buffering": "no"},
            )
        try:
            async with asyncio.timeout_at(deadline):
                text, finish = await _collect(first, events)
        except TimeoutError:
            return await self._fail(outcome, LichenError(ErrorCode.TIMEOUT, "request timed out"))
        except LichenError as error:
            return await self._fail(outcome, error)
        finally:
            await events.aclose()
        outcome.usage = finish.usage
        await self._record(outcome)
        return JSONResponse(shape.full(text, finish.finish_reason, finish.usage), headers=headers)

    async def _stream(
        self,
        shape: ResponseShape,
        first: EngineEvent,
        events: AsyncGenerator[EngineEvent, None],
        deadline: float,
        include_usage: bool,
        outcome: _Outcome,
    ) -> AsyncIterator[bytes]:
        opening = shape.first_chunk()
        if opening is not None:
            yield opening
        try:
            async with asyncio.timeout_at(deadline):
                event: EngineEvent | None = first
                while event is not None:
                    if isinstance(event, Delta):
                        yield shape.delta_chunk(event.text)
                    else:
                        yield shape.finish_chunk(event.finish_reason)
                        outcome.usage = event.usage
                        if include_usage:
                            yield shape.usage_chunk(event.usage)
                        break
                    event = await anext(events, None)
        except (LichenError, TimeoutError) as exc:
            error = (
                exc if isinstance(exc, LichenError) else LichenError(ErrorCode.TIMEOUT, "timed out")
            )
            outcome.status = error.http_status
            yield sse(error.openai_body())
        finally:
            await events.aclose()
            await self._record(outcome)
        yield SSE_DONE

    async def _fail(self, outcome: _Outcome, error: LichenError) -> JSONResponse:
        outcome.status = error.http_status
        if outcome.model:
            await self._record(outcome)
        return error_response(error)

    async def _record(self, outcome: _Outcome) -> None:
        if self.record is None:
            return
        try:
            await self.record(
                RequestRecord(
                    created_ms=int(time.time() * 1000),
                    model=outcome.model,
                    kind="chat" if outcome.kind == "chat" else "completion",
                    status=outcome.status,
                    prompt_tokens=outcome.usage.prompt_tokens,
                    completion_tokens=outcome.usage.completion_tokens,
                    ttft_ms=outcome.ttft_ms,
                    latency_ms=int((time.perf_counter() - outcome.started) * 1000),
                    node_peer_id=outcome.node,
                    stream=outcome.stream,
                )
            )
        except Exception as exc:  # accounting must never break an answer
            log.warning("could not record request metadata: %s", type(exc).__name__)


async def _collect(
    first: EngineEvent, events: AsyncGenerator[EngineEvent, None]
) -> tuple[str, Finish]:
    parts: list[str] = []
    event: Any = first
    while event is not None:
        if isinstance(event, Finish):
            return "".join(parts), event
        parts.append(event.text)
        event = await anext(events, None)
    raise LichenError(ErrorCode.NODE_FAILED, "the answer ended without a finish")
