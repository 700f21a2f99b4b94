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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.responses import Response

from lichen.engines.base import Delta, EngineEvent, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.errors import error_response, from_validation
from lichen.gateway.hooks import RequestPipeline
from lichen.gateway.responses import SSE_DONE, ResponseShape, merge_tool_calls, sse
from lichen.gateway.schemas import ChatCompletionRequest, CompletionRequest
from lichen.routing.capabilities import any_supports
from lichen.routing.router import Router, RouteTrace
from lichen.routing.scheduler import Scheduler
from lichen.storage.repositories import RequestRecord
from lichen.wire.messages import GenerationRequest, Usage

if TYPE_CHECKING:
    from lichen.metrics import GatewayMetrics

log = logging.getLogger(__name__)

RecordUsage = Callable[[RequestRecord], Awaitable[None]]

NODE_HEADER = "x-lichen-node"


@dataclass
class Outcome:
    """Metadata collected while answering; becomes a RequestRecord."""

    kind: str
    model: str
    stream: bool
    started: float
    status: int = 200
    ttft_ms: int | None = None
    usage: Usage = field(default_factory=lambda: Usage(0, 0))
    node: str | None = None
    receipt: bytes = b""  # the serving node's signed receipt (ledger), when it sent one
    job_id: str = ""  # the tracker's id of the job that finished the answer

    def finished(self, finish: Finish) -> None:
        """Take usage (and the node's receipt) from the answer's final event."""
        self.usage, self.receipt, self.job_id = finish.usage, finish.receipt, finish.job_id


@dataclass
class Routed:
    """A request placed on a node that has produced its first event."""

    first: EngineEvent
    events: AsyncGenerator[EngineEvent, None]
    deadline: float  # event-loop time by which the whole answer must be done
    headers: dict[str, str] = field(default_factory=dict)  # added by the request pipeline


@dataclass
class Answer:
    """A whole (non-streamed) answer."""

    text: str
    finish: Finish
    tool_calls: list[dict[str, Any]]


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
        metrics: GatewayMetrics | None = None,
        pipeline: RequestPipeline | None = None,
        settle: Callable[[Outcome], Awaitable[None]] | None = None,
    ) -> None:
        self.router = router
        self.scheduler = scheduler
        self.max_request_bytes = max_request_bytes
        self.timeout_s = timeout_s
        self.record = record
        self.metrics = metrics
        self.pipeline = pipeline  # privacy: screening, pseudonymization, privacy classes
        self.settle = settle  # accounting: quotas, ledger, usage (lichen.gateway.guard)

    def resolve_model(self, requested: str, *, tools: bool = False) -> str:
        """The model to run (``auto`` resolved): 404 if nobody serves it, 400 if the
        request needs tools and no node offers them for that model."""
        model = self.scheduler.resolve_model(requested)
        if tools and not any_supports(self.scheduler.registry, model, "tools"):
            raise LichenError(
                ErrorCode.INVALID_REQUEST,
                f"The model `{model}` does not support tools on this network",
                param="tools",
            )
        return model

    async def open(
        self,
        wire: GenerationRequest,
        outcome: Outcome,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        user: str | None = None,
    ) -> Routed:
        """Route ``wire`` and wait for its first event: the path every API dialect shares.

        Raises :class:`LichenError` (``TIMEOUT`` past the deadline) before anything
        was sent to the client, so callers can still answer with a status code.
        ``headers``, ``extra`` (the body's unknown fields) and ``user`` feed the
        request pipeline, which may refuse or transform the request.
        """
        run = None
        if self.pipeline is not None:
            run = await self.pipeline.begin(
                wire, headers=headers or {}, extra=extra or {}, user=user
            )
            wire = run.request
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        trace = RouteTrace()
        events = self.router.stream(wire, deadline_s=self.timeout_s, trace=trace)
        if run is not None:
            events = run.events(events)
        try:
            async with asyncio.timeout_at(deadline):
                first = await anext(events)
        except TimeoutError:
            await events.aclose()
            raise LichenError(ErrorCode.TIMEOUT, "request timed out") from None
        except StopAsyncIteration:
            raise LichenError(ErrorCode.NODE_FAILED, "empty answer") from None
        except BaseException:
            await events.aclose()
            raise
        outcome.ttft_ms = int((time.perf_counter() - outcome.started) * 1000)
        outcome.node = trace.nodes[-1] if trace.nodes else None
        return Routed(first, events, deadline, dict(run.headers) if run is not None else {})

    async def collect(self, routed: Routed, request: Request | None = None) -> Answer:
        """The rest of a routed answer, as a whole (the deadline applies).

        With ``request``, a client that disconnects cancels the job (CANCELLED).
        """
        try:
            async with asyncio.timeout_at(routed.deadline):
                work = _collect(routed.first, routed.events)
                return await (work if request is None else _unless_disconnected(request, work))
        except TimeoutError:
            raise LichenError(ErrorCode.TIMEOUT, "request timed out") from None
        finally:
            await routed.events.aclose()

    async def chat(self, request: Request) -> Response:
        return await self._handle(request, ChatCompletionRequest, "chat")

    async def completions(self, request: Request) -> Response:
        return await self._handle(request, CompletionRequest, "completion")

    async def _handle(
        self, request: Request, schema: type[ChatCompletionRequest | CompletionRequest], kind: str
    ) -> Response:
        started = time.perf_counter()
        outcome = Outcome(kind=kind, model="", stream=False, started=started)
        try:
            body = await read_body(request, self.max_request_bytes)
            try:
                parsed = schema.model_validate_json(body)
            except ValidationError as exc:
                raise from_validation(exc) from None
            tools = isinstance(parsed, ChatCompletionRequest) and parsed.wants_tools
            model = self.resolve_model(parsed.model, tools=tools)
            outcome.model, outcome.stream = model, parsed.stream
            routed = await self.open(
                parsed.to_wire(model),
                outcome,
                headers=request.headers,
                extra=parsed.model_extra,
                user=parsed.user,
            )
        except LichenError as error:
            return await self._fail(outcome, error)

        shape = ResponseShape(kind=kind, model=parsed.model if parsed.model != "auto" else model)
        headers = ({NODE_HEADER: outcome.node} if outcome.node else {}) | routed.headers
        if parsed.stream:
            return StreamingResponse(
                self._stream(
                    shape,
                    routed.first,
                    routed.events,
                    routed.deadline,
                    parsed.include_usage,
                    outcome,
                ),
                media_type="text/event-stream",
                headers=headers | {"cache-control": "no-cache", "x-accel-buffering": "no"},
            )
        try:
            answer = await self.collect(routed, request)
        except LichenError as error:
            return await self._fail(outcome, error)
        outcome.finished(answer.finish)
        await self._record(outcome)
        finish = answer.finish
        return JSONResponse(
            shape.full(answer.text, finish.finish_reason, finish.usage, answer.tool_calls),
            headers=headers,
        )

    async def _stream(
        self,
        shape: ResponseShape,
        first: EngineEvent,
        events: AsyncGenerator[EngineEvent, None],
        deadline: float,
        include_usage: bool,
        outcome: Outcome,
    ) -> AsyncIterator[bytes]:
        opening = shape.first_chunk()
        if opening is not None:
            yield opening
        try:
            async with asyncio.timeout_at(deadline):
                event: EngineEvent | None = first
                while event is not None:
                    if isinstance(event, Delta):
                        if event.text:
                            yield shape.delta_chunk(event.text)
                        if event.tool_calls:
                            yield shape.tool_calls_chunk(event.tool_calls)
                    else:
                        yield shape.finish_chunk(event.finish_reason)
                        outcome.finished(event)
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
            # A client that disconnects cancels this generator; the job must still be
            # cancelled on the node and the request logged, so shield the clean-up.
            with anyio.CancelScope(shield=True):
                await events.aclose()
                await self._record(outcome)
        yield SSE_DONE

    async def _fail(self, outcome: Outcome, error: LichenError) -> JSONResponse:
        outcome.status = error.http_status
        if outcome.model:
            await self._record(outcome)
        return error_response(error)

    async def record_outcome(self, outcome: Outcome) -> None:
        """Metrics and the request log for one answered (or failed) request."""
        await self._record(outcome)

    async def _record(self, outcome: Outcome) -> None:
        if self.settle is not None:
            try:
                await self.settle(outcome)
            except Exception as exc:  # accounting must never break an answer
                log.warning("could not settle the request: %s", type(exc).__name__)
        if self.metrics is not None and outcome.status < 400:
            self.metrics.observe_answer(outcome.kind, outcome.model, outcome.ttft_ms, outcome.usage)
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


async def _unless_disconnected(request: Request, work: Awaitable[Answer]) -> Answer:
    """``work``'s result, or CANCELLED as soon as the client goes away.

    The body has been read, so the next ASGI message is ``http.disconnect``.
    """

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise LichenError(ErrorCode.CANCELLED, "the client disconnected")
    finally:
        for pending in (task, watcher):
            pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)


async def _collect(first: EngineEvent, events: AsyncGenerator[EngineEvent, None]) -> Answer:
    parts: list[str] = []
    calls: list[str] = []
    event: Any = first
    while event is not None:
        if isinstance(event, Finish):
            return Answer("".join(parts), event, merge_tool_calls(calls))
        parts.append(event.text)
        if event.tool_calls:
            calls.append(event.tool_calls)
        event = await anext(events, None)
    raise LichenError(ErrorCode.NODE_FAILED, "the answer ended without a finish")
