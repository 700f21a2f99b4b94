"""Running a request on the network: failover before the first token, resume after it.

If the serving node fails before any text was sent, the next candidate gets the
same request. If it fails mid-stream, the next candidate gets the prompt plus the
text already streamed (``continuation``) and continues from there, so the client
sees one unbroken stream with nothing repeated and nothing lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import msgspec

from lichen.engines.base import Delta, EngineEvent, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.routing.capabilities import supports
from lichen.routing.scheduler import Scheduler
from lichen.tracker.connection import JobStream
from lichen.wire.messages import GenerationRequest, Usage

log = logging.getLogger(__name__)

# Failures of one node, not of the request: another node may well succeed.
RETRYABLE = {ErrorCode.NODE_FAILED, ErrorCode.NO_CAPACITY, ErrorCode.ENGINE_ERROR}


@dataclass
class RouteTrace:
    """What happened while routing one request (metadata only, never content)."""

    nodes: list[str] = field(default_factory=list)  # peer ids in the order they served
    resumes: int = 0
    failovers: int = 0


class Router:
    """Turns a request into one stream of events, whatever happens to the nodes."""

    def __init__(self, scheduler: Scheduler, *, max_attempts: int = 4) -> None:
        self.scheduler = scheduler
        self.reputation = scheduler.reputation
        self.max_attempts = max_attempts

    async def stream(
        self, request: GenerationRequest, *, deadline_s: float, trace: RouteTrace | None = None
    ) -> AsyncGenerator[EngineEvent, None]:
        trace = trace if trace is not None else RouteTrace()
        sent_text: list[str] = []
        sent_tokens = 0
        tried: set[str] = set()
        last_error = LichenError(ErrorCode.NO_CAPACITY, "no node can serve this model right now")
        for _attempt in range(self.max_attempts):
            attempt_request = _resumed(request, "".join(sent_text), sent_tokens)
            if attempt_request is None:  # the budget was used up exactly when the node died
                yield Finish("length", Usage(0, sent_tokens))
                return
            job = await self._start(attempt_request, tried, deadline_s)
            if job is None:
                raise last_error
            trace.nodes.append(job.peer_id)
            started = time.perf_counter()
            ttft_s: float | None = None
            try:
                async for event in job:
                    if isinstance(event, Delta):
                        if ttft_s is None:
                            ttft_s = time.perf_counter() - started
                        sent_text.append(event.text)
                        sent_tokens += event.tokens
                        yield event
                    else:
                        self.reputation.job_succeeded(job.peer_id, ttft_s)
                        yield _merged_finish(
                            event, sent_tokens, resumed=bool(attempt_request.continuation)
                        )
                        return
            except LichenError as error:
                if error.code not in RETRYABLE:
                    raise
                if error.code is ErrorCode.NODE_FAILED:
                    self.reputation.job_failed(job.peer_id)
                last_error = error
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

    async def _start(
        self, request: GenerationRequest, tried: set[str], deadline_s: float
    ) -> JobStream | None:
        for conn in self.scheduler.candidates(
            request.model, exclude=tried, privacy_class=request.privacy_class
        ):
            if request.params.tools and not supports(conn, request.model, "tools"):
                continue  # this node's engine for the model cannot take tools
            tried.add(conn.peer_id)
            with contextlib.suppress(LichenError):
                return await conn.start_job(
                    request, deadline_ms=int((time.time() + deadline_s) * 1000)
                )
        return None


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
