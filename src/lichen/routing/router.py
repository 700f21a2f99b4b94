"""Running a request on the network: failover before the first token, resume after it.

If the serving node fails before any text was sent, the next candidate gets the
same request. If it fails mid-stream, the next candidate gets the prompt plus the
text already streamed (``continuation``) and continues from there, so the client
sees one unbroken stream with nothing repeated and nothing lost.

A node that does not start answering within ``first_token_timeout_s`` has failed
(a node lying about its load gets there first and then hangs), and so has one
that falls silent that long mid-stream: the router fails over (or resumes) and
the node's reputation pays. Only failures the node caused count against
it; a request the node refuses as invalid goes back to the client unretried.
However the stream ends (finish, error, the consumer leaving, a cancelled task),
the job is closed, which cancels it on the node and gives its slot back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import msgspec

from lichen.engines.base import Delta, EngineEvent, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.routing.affinity import PrefixChain
from lichen.routing.capabilities import supports
from lichen.routing.context import fits, min_prompt_tokens
from lichen.routing.scheduler import Scheduler
from lichen.tracker.job_stream import JobStream
from lichen.tracker.output import CLIENT_CAUSED
from lichen.wire.messages import GenerationRequest, Usage

log = logging.getLogger(__name__)

# Failures of one node, not of the request: another node may well succeed.
RETRYABLE = {ErrorCode.NODE_FAILED, ErrorCode.NO_CAPACITY, ErrorCode.ENGINE_ERROR}
DEFAULT_FIRST_TOKEN_TIMEOUT_S = 60.0
DEFAULT_STALL_TIMEOUT_S = 60.0
RETRY_AFTER_S = "1"  # what a 503 tells clients when every candidate is full


@dataclass
class RouteTrace:
    """What happened while routing one request (metadata only, never content)."""

    nodes: list[str] = field(default_factory=list)  # peer ids in the order they served
    resumes: int = 0
    failovers: int = 0


class Router:
    """Turns a request into one stream of events, whatever happens to the nodes."""

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        max_attempts: int = 4,
        first_token_timeout_s: float | None = DEFAULT_FIRST_TOKEN_TIMEOUT_S,
        stall_timeout_s: float | None = DEFAULT_STALL_TIMEOUT_S,
    ) -> None:
        self.scheduler = scheduler
        self.reputation = scheduler.reputation
        self.max_attempts = max_attempts
        self.first_token_timeout_s = first_token_timeout_s  # None: wait for the deadline
        self.stall_timeout_s = stall_timeout_s  # None: a consumer may block a job forever

    async def stream(
        self, request: GenerationRequest, *, deadline_s: float, trace: RouteTrace | None = None
    ) -> AsyncGenerator[EngineEvent, None]:
        trace = trace if trace is not None else RouteTrace()
        sent_text: list[str] = []
        sent_tokens = 0
        sent_calls = False  # tool calls were streamed: a text continuation cannot resume them
        tried: set[str] = set()
        last_error = _full("no node can serve this model right now")
        prefix = self.scheduler.prefix_chain(request)  # hashes only, for prefix affinity
        for _attempt in range(self.max_attempts):
            attempt_request = _resumed(request, "".join(sent_text), sent_tokens)
            if attempt_request is None:  # the budget was used up exactly when the node died
                yield Finish("length", Usage(0, sent_tokens))
                return
            job = await self._start(attempt_request, tried, deadline_s, prefix)
            if job is None:
                raise last_error
            trace.nodes.append(job.peer_id)
            started = time.perf_counter()
            ttft_s: float | None = None
            try:
                while True:
                    event = await self._next(job, first=ttft_s is None)
                    if isinstance(event, Delta):
                        if ttft_s is None:
                            ttft_s = time.perf_counter() - started
                        sent_text.append(event.text)
                        sent_tokens += event.tokens
                        sent_calls = sent_calls or bool(event.tool_calls)
                        yield event
                    else:
                        self.reputation.job_succeeded(job.peer_id, ttft_s)
                        self.scheduler.remember_answer(job.peer_id, request, "".join(sent_text))
                        yield _merged_finish(
                            event, sent_tokens, resumed=bool(attempt_request.continuation)
                        )
                        return
            except LichenError as error:
                if error.code not in RETRYABLE:
                    raise
                if error.code is ErrorCode.NODE_FAILED:
                    self.reputation.job_failed(job.peer_id)
                last_error = (
                    error if error.code is not ErrorCode.NO_CAPACITY else _full(error.message)
                )
                if sent_calls:  # another node would start its tool calls afresh: end here
                    raise
                if sent_tokens:
                    trace.resumes += 1
                    log.warning(
                        "node %s failed mid-stream after %d chunks; resuming elsewhere",
                        job.peer_id,
                        len(sent_text),
                    )
                else:
                    trace.failovers += 1
                    log.warning("node %s failed before the first token; failing over", job.peer_id)
            finally:
                await job.aclose()
        raise last_error

    async def _next(self, job: JobStream, *, first: bool) -> EngineEvent:
        """The job's next event, waiting at most ``first_token_timeout_s`` for the node.

        The consumer is waiting here, so credit has flowed back: a silent node is the
        node's doing, not back-pressure.
        """
        if self.first_token_timeout_s is None:
            return await anext(job)
        try:
            async with asyncio.timeout(self.first_token_timeout_s):
                return await anext(job)
        except TimeoutError:
            what = "start answering" if first else "send its next chunk"
            message = f"the node did not {what} within {self.first_token_timeout_s:g} s"
            if not job.node_failed(first=first):  # it was busy: fail over, do not blame it
                raise LichenError(ErrorCode.NO_CAPACITY, message) from None
            raise LichenError(ErrorCode.NODE_FAILED, message) from None

    async def _start(
        self,
        request: GenerationRequest,
        tried: set[str],
        deadline_s: float,
        prefix: PrefixChain | None = None,
    ) -> JobStream | None:
        prompt_tokens = min_prompt_tokens(request)
        for conn in self.scheduler.candidates(
            request.model, exclude=tried, privacy_class=request.privacy_class, prefix=prefix
        ):
            if request.params.tools and not supports(conn, request.model, "tools"):
                continue  # this node's engine for the model cannot take tools
            if not fits(conn, request.model, prompt_tokens):
                continue  # this node's per-request context is too small for the prompt
            tried.add(conn.peer_id)
            try:
                job = await conn.start_job(
                    request,
                    deadline_ms=int((time.time() + deadline_s) * 1000),
                    stall_timeout_s=self.stall_timeout_s,
                )
            except LichenError as error:
                if error.code in CLIENT_CAUSED:
                    raise  # no node could carry it
            else:
                self.scheduler.remember(conn, prefix)
                return job
        return None


def _full(message: str) -> LichenError:
    """NO_CAPACITY with a Retry-After header (the gateway answers 503)."""
    return LichenError(ErrorCode.NO_CAPACITY, message, headers={"Retry-After": RETRY_AFTER_S})


def _resumed(request: GenerationRequest, text: str, tokens: int) -> GenerationRequest | None:
    if not text:
        return request
    params = request.params
    if params.max_tokens is not None:
        remaining = params.max_tokens - tokens
        if remaining <= 0:
            return None
        params = msgspec.structs.replace(params, max_tokens=remaining)
    return msgspec.structs.replace(request, continuation=request.continuation + text, params=params)


def _merged_finish(event: Finish, sent_tokens: int, *, resumed: bool) -> Finish:
    """Usage for the whole answer, across every node that served a part of it."""
    if not resumed:
        return event
    # The resuming node counted the already-sent text as prompt; give it back.
    prompt = max(0, event.usage.prompt_tokens - (sent_tokens - event.usage.completion_tokens))
    return dataclasses.replace(event, usage=Usage(prompt, sent_tokens))
