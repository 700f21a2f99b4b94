"""One answer path for every dialect: open, then stream or collect, then settle.

A dialect adapter translates its request into a :class:`Call` (the wire request
plus how to answer) and supplies a :class:`Renderer` that turns the neutral
events into its own bytes and bodies. :func:`answer` does the rest, the same way
for every dialect: it routes the request (``n`` parallel choices, possibly on
different nodes), waits for the first event so a refusal still gets a status
code, then either streams (:class:`ClosingStream`) or collects, and every
choice is recorded and settled on every exit path (see
:meth:`CompletionService.relay`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import anyio
import msgspec
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from lichen.engines.base import Delta, EngineEvent, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.completions import (
    NODE_HEADER,
    Answer,
    CompletionService,
    Outcome,
    Routed,
)
from lichen.wire.messages import GenerationRequest, Usage


@dataclass
class Call:
    """One request of any dialect, translated for the network."""

    wire: GenerationRequest
    kind: str  # "chat" | "completion": the request log's kind
    stream: bool
    n: int = 1  # parallel choices (each its own job, recorded and settled on its own)
    headers: Mapping[str, str] = field(default_factory=dict)  # for the request pipeline
    extra: Mapping[str, Any] = field(default_factory=dict)  # the body's unknown fields
    user: str | None = None
    started: float = field(default_factory=time.perf_counter)


class Renderer(Protocol):
    """A dialect's answer shapes for one response."""

    media_type: str  # of the stream

    def start(self) -> list[bytes]:
        """What a stream opens with."""
        ...

    def delta(self, index: int, delta: Delta) -> list[bytes]:
        """A piece of choice ``index``."""
        ...

    def finish(self, index: int, finish: Finish) -> list[bytes]:
        """Choice ``index`` is done."""
        ...

    def end(self, usage: Usage) -> list[bytes]:
        """Every choice is done; ``usage`` is summed over them."""
        ...

    def error(self, error: LichenError) -> list[bytes]:
        """The stream cannot go on: its last bytes."""
        ...

    def full(self, answers: list[Answer], usage: Usage) -> dict[str, Any]:
        """The whole (non-streamed) answer body."""
        ...


def total_usage(usages: list[Usage]) -> Usage:
    return Usage(
        sum(u.prompt_tokens for u in usages),
        sum(u.completion_tokens for u in usages),
        all(u.reported for u in usages),
        cached_tokens=sum(u.cached_tokens for u in usages),
    )


async def answer(
    service: CompletionService, call: Call, renderer: Renderer, request: Request
) -> Response:
    """Serve ``call`` and answer with ``renderer``'s shapes; refusals raise LichenError."""
    outcomes = [
        Outcome(kind=call.kind, model=call.wire.model, stream=call.stream, started=call.started)
        for _ in range(call.n)
    ]
    lanes = await _open_all(service, call, outcomes, request)
    headers = dict(lanes[0][0].headers)
    if outcomes[0].node:
        headers[NODE_HEADER] = outcomes[0].node
    if call.stream:
        stream = ClosingStream(
            _stream(service, renderer, lanes),
            media_type=renderer.media_type,
            headers=headers | {"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
        stream.cleanup = partial(_settle_unstarted, service, lanes)
        return stream
    answers = await service.collect_all(lanes, request)
    usage = total_usage([a.finish.usage for a in answers])
    return JSONResponse(renderer.full(answers, usage), headers=headers)


async def _open_all(
    service: CompletionService, call: Call, outcomes: list[Outcome], request: Request
) -> list[tuple[Routed, Outcome]]:
    """Route every choice; if one cannot be served (or the client left before the
    first token: CANCELLED), close the others and refuse."""

    async def one(index: int, outcome: Outcome) -> Routed:
        wire = call.wire
        seed = wire.params.seed
        if index and seed is not None:  # distinct, reproducible choices
            wire = msgspec.structs.replace(
                wire, params=msgspec.structs.replace(wire.params, seed=seed + index)
            )
        try:
            return await service.open(
                wire,
                outcome,
                headers=call.headers,
                extra=call.extra,
                user=call.user,
                request=request,
            )
        except LichenError as error:
            service.fail(outcome, error)
            raise

    results = await asyncio.gather(
        *(one(i, o) for i, o in enumerate(outcomes)), return_exceptions=True
    )
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is None:
        return [(r, o) for r, o in zip(results, outcomes, strict=True) if isinstance(r, Routed)]
    for result, outcome in zip(results, outcomes, strict=True):
        if isinstance(result, Routed):  # a sibling was refused: give this job back
            with anyio.CancelScope(shield=True):
                await result.events.aclose()
                outcome.status = ErrorCode.CANCELLED.http_status
                await service.record_outcome(outcome)
    raise failure


async def _settle_unstarted(
    service: CompletionService, lanes: list[tuple[Routed, Outcome]]
) -> None:
    """Close and settle the choices whose stream never started (the client left first)."""
    for routed, outcome in lanes:
        if not outcome.recorded:
            await routed.events.aclose()
            await service.record_outcome(outcome)


async def _stream(
    service: CompletionService, renderer: Renderer, lanes: list[tuple[Routed, Outcome]]
) -> AsyncIterator[bytes]:
    for chunk in renderer.start():
        yield chunk
    async with AsyncExitStack() as stack:
        relays = [
            await stack.enter_async_context(aclosing(service.relay(routed, outcome)))
            for routed, outcome in lanes
        ]
        usages: list[Usage] = []
        try:
            async for index, event in _merge(relays):
                if isinstance(event, Finish):
                    usages.append(event.usage)
                    chunks = renderer.finish(index, event)
                else:
                    chunks = renderer.delta(index, event)
                for chunk in chunks:
                    yield chunk
        except LichenError as error:
            for chunk in renderer.error(error):
                yield chunk
            return
    for chunk in renderer.end(total_usage(usages)):
        yield chunk


async def _merge(
    relays: list[AsyncGenerator[EngineEvent, None]],
) -> AsyncIterator[tuple[int, EngineEvent]]:
    """The events of every choice as they come, tagged with the choice's index."""
    if len(relays) == 1:
        async for event in relays[0]:
            yield 0, event
        return
    pending: dict[asyncio.Task[EngineEvent], int] = {
        asyncio.ensure_future(anext(relay)): i for i, relay in enumerate(relays)
    }
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                index = pending.pop(task)
                try:
                    event = task.result()
                except StopAsyncIteration:
                    continue
                yield index, event
                if not isinstance(event, Finish):
                    pending[asyncio.ensure_future(anext(relays[index]))] = index
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class ClosingStream(StreamingResponse):
    """A streamed answer whose generator is closed before the request ends.

    Starlette leaves a stream the client abandoned to the garbage collector; closing
    it here settles the answer while the request's admission is still in force.
    """

    cleanup: Callable[[], Awaitable[None]] | None = None  # after the body is closed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            body = self.body_iterator
            with anyio.CancelScope(shield=True):
                if isinstance(body, AsyncGenerator):
                    await body.aclose()
                if self.cleanup is not None:
                    await self.cleanup()
