"""The dialect-neutral answering service: resolve, validate, route, relay, settle.

Every API dialect (OpenAI chat, completions and responses, Anthropic messages,
Ollama) turns its request into one :class:`GenerationRequest` and hands it here;
only the shapes of requests and answers differ (``lichen.gateway.dialects``).

The first event is awaited before the response starts (:meth:`CompletionService.open`),
so a request that cannot be served gets a real status code (404, 400, 503)
instead of a 200 carrying an error. :meth:`CompletionService.relay` then hands
out the rest of the answer under the request's deadline, counts what was sent
(``streamed_tokens``, ``completion_text``) and records and settles the answer on
every exit path: finished, failed, timed out, or abandoned by the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from fastapi import Request

from lichen.clock import now_ms
from lichen.engines.base import Delta, EngineEvent, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.hooks import RequestPipeline
from lichen.gateway.limits import RequestLimits, check_generation, grammar_weight
from lichen.gateway.responses import merge_tool_calls
from lichen.routing.capabilities import any_supports
from lichen.routing.context import check_context, node_context
from lichen.routing.router import Router, RouteTrace
from lichen.routing.scheduler import Scheduler
from lichen.storage.repositories import RequestRecord
from lichen.wire.messages import GenerationRequest, Usage

if TYPE_CHECKING:
    from lichen.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

RecordUsage = Callable[[RequestRecord], Awaitable[None]]


class AnswerTap(Protocol):
    """Sees each routed answer's raw events, before the request pipeline (the tracker's
    traffic audits, ``lichen.audit.traffic``); returns them unchanged."""

    def tap(
        self,
        request: GenerationRequest,
        trace: RouteTrace,
        events: AsyncGenerator[EngineEvent, None],
    ) -> AsyncGenerator[EngineEvent, None]: ...


NODE_HEADER = "x-lichen-node"


@dataclass
class Outcome:
    """Metadata collected while answering; becomes a RequestRecord and a settlement."""

    kind: str
    model: str
    stream: bool
    started: float
    status: int = 200
    ttft_ms: int | None = None
    usage: Usage = field(default_factory=lambda: Usage(0, 0))
    node: str | None = None
    node_context: int = 0  # the serving node's declared context for the model (bounds a charge)
    receipt: bytes = b""  # the serving node's signed receipt (ledger), when it sent one
    job_id: str = ""  # the tracker's id of the job that finished the answer
    streamed_tokens: int = 0  # tokens of the deltas handed to the client so far
    # The text handed to the client, so what was streamed can be counted even when the
    # answer never finished. In memory only: never persisted, never logged (repr=False).
    completion_text: str = field(default="", repr=False)
    recorded: bool = False  # settled and recorded (exactly once)

    def finished(self, finish: Finish) -> None:
        """Take usage (and the node's receipt) from the answer's final event."""
        self.usage, self.receipt, self.job_id = finish.usage, finish.receipt, finish.job_id

    def sent(self, delta: Delta) -> None:
        """Count a delta handed to the client."""
        self.streamed_tokens += delta.tokens
        self.completion_text += delta.text


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
    logprobs: list[dict[str, Any]] = field(default_factory=list)  # OpenAI ``content`` entries


def parse_logprobs(raw: str) -> list[dict[str, Any]] | None:
    """A delta's ``logprobs.content`` entries; None when absent or malformed (a node's
    output is not trusted: a bad report is dropped, never a failed answer)."""
    if not raw:
        return None
    try:
        entries = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return None
    return entries


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
    """Answers generation requests of every dialect by routing them over the network."""

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
        weigh: Callable[[int, str], Awaitable[None]] | None = None,
        limits: RequestLimits | None = None,
        audits: AnswerTap | None = None,
    ) -> None:
        self.router = router
        self.scheduler = scheduler
        self.max_request_bytes = max_request_bytes
        self.timeout_s = timeout_s
        self.record = record
        self.metrics = metrics
        self.pipeline = pipeline  # privacy: screening, pseudonymization, privacy classes
        self.settle = settle  # accounting: quotas, ledger, usage (lichen.gateway.guard)
        self.weigh = weigh  # accounting: charge costly requests more of the rate limit
        self.limits = limits or RequestLimits()  # bounds every dialect shares (issue 10)
        self.audits = audits  # a sample of real answers re-scored, as the policy allows (issue 11)
        self._recording: set[asyncio.Task[None]] = set()  # refusals being recorded (fail)

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

    def check(self, wire: GenerationRequest) -> None:
        """Validation every dialect shares (bounds, sizes, schema limits), before routing.

        A dialect's own parser already refused what its schema can express; this
        refuses the rest the same way for every dialect (400 naming the parameter).
        """
        check_generation(wire, self.limits, self.scheduler.registry)
        check_context(self.scheduler.registry, wire)  # no node can hold the prompt: 400

    async def open(
        self,
        wire: GenerationRequest,
        outcome: Outcome,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        user: str | None = None,
        request: Request | None = None,
    ) -> Routed:
        """Route ``wire`` and wait for its first event: the path every API dialect shares.

        Raises :class:`LichenError` (``TIMEOUT`` past the deadline) before anything
        was sent to the client, so callers can still answer with a status code.
        ``headers``, ``extra`` (the body's unknown fields) and ``user`` feed the
        request pipeline, which may refuse or transform the request. With
        ``request``, a client that disconnects while the first event is awaited
        cancels the job (the router sends JobCancel) and gets ``CANCELLED`` (499).
        """
        self.check(wire)
        weight = grammar_weight(wire)
        if weight and self.weigh is not None:
            await self.weigh(weight, "its JSON schemas are large")
        run = None
        if self.pipeline is not None:
            run = await self.pipeline.begin(
                wire, headers=headers or {}, extra=extra or {}, user=user
            )
            wire = run.request
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        trace = RouteTrace()
        events = self.router.stream(wire, deadline_s=self.timeout_s, trace=trace)
        if self.audits is not None:
            events = self.audits.tap(wire, trace, events)
        if run is not None:
            events = run.events(events)
        try:
            async with asyncio.timeout_at(deadline):
                first = await _first_event(events, request)
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
        if outcome.node is not None:
            outcome.node_context = node_context(
                self.scheduler.registry, outcome.node, outcome.model
            )
        return Routed(first, events, deadline, dict(run.headers) if run is not None else {})

    async def relay(self, routed: Routed, outcome: Outcome) -> AsyncGenerator[EngineEvent, None]:
        """The answer's events under its deadline, ending with its :class:`Finish`.

        Counts every delta handed out on ``outcome``; raises :class:`LichenError`
        (``TIMEOUT`` past the deadline, ``NODE_FAILED`` for an answer without a
        finish). However the iteration ends (finished, failed, or closed because the
        client left) the job is closed and the answer recorded and settled once.
        """
        try:
            async with asyncio.timeout_at(routed.deadline):
                event: EngineEvent | None = routed.first
                while event is not None:
                    if isinstance(event, Finish):
                        outcome.finished(event)
                        yield event
                        return
                    outcome.sent(event)
                    yield event
                    event = await anext(routed.events, None)
            raise LichenError(ErrorCode.NODE_FAILED, "the answer ended without a finish")
        except TimeoutError:
            outcome.status = ErrorCode.TIMEOUT.http_status
            raise LichenError(ErrorCode.TIMEOUT, "request timed out") from None
        except LichenError as error:
            outcome.status = error.http_status
            raise
        finally:
            # A client that disconnects cancels the consumer; the job must still be
            # cancelled on the node and the answer settled, so shield the clean-up.
            with anyio.CancelScope(shield=True):
                await routed.events.aclose()
                await self.record_outcome(outcome)

    async def collect(
        self, routed: Routed, outcome: Outcome, request: Request | None = None
    ) -> Answer:
        """The rest of a routed answer, as a whole; recorded and settled.

        With ``request``, a client that disconnects cancels the job (CANCELLED).
        """
        (answer,) = await self.collect_all([(routed, outcome)], request)
        return answer

    async def collect_all(
        self, lanes: list[tuple[Routed, Outcome]], request: Request | None = None
    ) -> list[Answer]:
        """Several routed answers (``n`` choices) as wholes; if one fails, the others
        are cancelled and the first failure raised. With ``request``, a client that
        disconnects cancels every job (CANCELLED)."""
        work = _all([_collect(aclosing(self.relay(routed, outcome))) for routed, outcome in lanes])
        if request is None:
            return await work
        return await _unless_disconnected(request, work, [outcome for _, outcome in lanes])

    def fail(self, outcome: Outcome, error: LichenError) -> None:
        """Record a request refused before its answer started (when a model was known).

        The refusal is answered at once and recorded just after: writing its row took
        most of a refusal's time (2.2 of 2.5 ms in ``bench/overload.py`` at 4x, more when
        the database checkpoints), and a network refusing its excess should say so fast.
        :meth:`drain` waits for these writes when the gateway stops.
        """
        outcome.status = error.http_status
        if outcome.model:
            task = asyncio.create_task(self.record_outcome(outcome), name="record-refusal")
            self._recording.add(task)
            task.add_done_callback(self._recording.discard)

    async def drain(self) -> None:
        """Wait until every refusal :meth:`fail` started recording is recorded."""
        while self._recording:
            await asyncio.gather(*self._recording, return_exceptions=True)

    async def record_outcome(self, outcome: Outcome) -> None:
        """Settle, count and log one answered (or failed) request, exactly once."""
        if outcome.recorded:
            return
        outcome.recorded = True
        if self.settle is not None:
            try:
                await self.settle(outcome)
            except Exception as exc:  # accounting must never break an answer
                log.warning("could not settle the request: %s", type(exc).__name__)
        if self.metrics is not None and outcome.status < 400:
            self.metrics.observe_answer(outcome.kind, outcome.model, outcome.ttft_ms, outcome.usage)
        if self.record is None or outcome.kind not in ("chat", "completion"):
            return  # the request log holds generations only
        try:
            await self.record(
                RequestRecord(
                    created_ms=now_ms(),
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


async def _all(works: list[Coroutine[Any, Any, Answer]]) -> list[Answer]:
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(work) for work in works]
    except* LichenError as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def _unless_disconnected(
    request: Request, work: Awaitable[list[Answer]], outcomes: list[Outcome]
) -> list[Answer]:
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
        for outcome in outcomes:  # recorded as the jobs close
            outcome.status = ErrorCode.CANCELLED.http_status
        raise LichenError(ErrorCode.CANCELLED, "the client disconnected")
    finally:
        for pending in (task, watcher):
            pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)


async def _first_event(
    events: AsyncGenerator[EngineEvent, None], request: Request | None
) -> EngineEvent:
    """The answer's first event, or CANCELLED as soon as the client goes away.

    The body has been read, so the next ASGI message is ``http.disconnect``; the
    caller closes ``events``, which cancels the job on its node.
    """
    if request is None:
        return await anext(events)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    first = asyncio.ensure_future(anext(events))
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({first, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if first.done():
            return first.result()
        raise LichenError(ErrorCode.CANCELLED, "the client disconnected")
    finally:
        for pending in (first, watcher):
            pending.cancel()
        await asyncio.gather(first, watcher, return_exceptions=True)


async def _collect(relayed: aclosing[AsyncGenerator[EngineEvent, None]]) -> Answer:
    parts: list[str] = []
    calls: list[str] = []
    logprobs: list[dict[str, Any]] = []
    async with relayed as events:
        async for event in events:
            if isinstance(event, Finish):
                return Answer("".join(parts), event, merge_tool_calls(calls), logprobs)
            parts.append(event.text)
            if event.tool_calls:
                calls.append(event.tool_calls)
            logprobs.extend(parse_logprobs(event.logprobs) or ())
    raise LichenError(ErrorCode.NODE_FAILED, "the answer ended without a finish")
