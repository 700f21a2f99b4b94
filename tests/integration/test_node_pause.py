"""Unread streams stop costing the node (issue 10).

A node reads its engine at most :data:`PAUSE_AFTER` deltas past the client's
credit; then it closes the generation (llama.cpp stops decoding) and keeps the
text. When the client has read it all, generation continues on the same node with
that text as ``continuation``, so the client sees one unbroken answer.

:class:`EagerEngine` produces like llama.cpp does (its own task decodes whether or
not anybody reads), so the tests count what the engine really generated.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator

import pytest
from fakes import MODEL, FakeEngine, LocalNetwork, eventually

from lichen.engines.base import Delta, EngineEvent, Finish
from lichen.node.jobs import PAUSE_AFTER, JobRunner
from lichen.wire.messages import (
    ChatMessage,
    GenerationRequest,
    JobChunk,
    JobEnd,
    JobError,
    JobStart,
    Message,
    SamplingParams,
    Usage,
)

TOKENS = [f"t{i} " for i in range(400)]
WINDOW = 8


class EagerEngine(FakeEngine):
    """A fake engine that decodes in its own task, read or not (like llama.cpp)."""

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[EngineEvent, None]:
        self.requests.append(request)
        start = self._position(request.continuation)
        limit = request.params.max_tokens
        queue: asyncio.Queue[EngineEvent] = asyncio.Queue()

        async def decode() -> None:
            produced, position = 0, start
            while position < len(self.tokens) and (limit is None or produced < limit):
                await asyncio.sleep(0)
                queue.put_nowait(Delta(self.tokens[position]))
                self.produced += 1
                produced += 1
                position += 1
            reason = "stop" if position >= len(self.tokens) else "length"
            queue.put_nowait(Finish(reason, Usage(self.prompt_tokens + start, produced)))

        self.active += 1
        task = asyncio.create_task(decode())
        done = False
        try:
            while True:
                event = await queue.get()
                if isinstance(event, Finish):
                    done = True
                    self.finished += 1
                yield event
                if done:
                    return
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self.active -= 1
            if not done:
                self.cancelled += 1


def _request(**params: object) -> GenerationRequest:
    return GenerationRequest(
        kind="chat",
        model=MODEL,
        messages=[ChatMessage(role="user", content="x")],
        params=SamplingParams(**params),  # type: ignore[arg-type]
    )


class Wire:
    """The tracker's side of one node link: what the runner sent."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, msg: Message) -> None:
        self.sent.append(msg)

    @property
    def chunks(self) -> list[JobChunk]:
        return [m for m in self.sent if isinstance(m, JobChunk)]

    @property
    def end(self) -> JobEnd | None:
        return next((m for m in self.sent if isinstance(m, JobEnd)), None)


async def _start(engine: FakeEngine, request: GenerationRequest) -> tuple[JobRunner, Wire]:
    runner, wire = JobRunner(engine), Wire()
    runner.start(JobStart(job_id="j1", request=request, deadline_ms=0, window=WINDOW), wire.send)
    return runner, wire


async def test_a_never_read_job_stops_generating_after_window_and_buffer() -> None:
    engine = EagerEngine(TOKENS)
    runner, wire = await _start(engine, _request())
    try:
        await eventually(lambda: runner.stats.jobs_paused == 1, what="the job to pause")
        await eventually(lambda: engine.active == 0, what="the engine to stop")
        assert len(wire.chunks) == WINDOW  # sent: exactly the window
        assert WINDOW + PAUSE_AFTER < engine.produced < len(TOKENS) // 4
        assert "j1" in runner.jobs  # the job itself lives on, waiting for its reader
    finally:
        runner.cancel_all()
        assert await runner.wait_idle(5)
    assert engine.finished == 0


@pytest.mark.parametrize("max_tokens", [None, 150])
async def test_a_slow_reader_gets_the_whole_answer_exactly(max_tokens: int | None) -> None:
    engine = EagerEngine(TOKENS, prompt_tokens=7)
    runner, wire = await _start(engine, _request(max_tokens=max_tokens))
    expected = TOKENS if max_tokens is None else TOKENS[:max_tokens]
    while wire.end is None:
        # Read a little once the engine has had time to run ahead, then give credit.
        have = len(wire.chunks)
        await eventually(
            lambda have=have: len(wire.chunks) > have or wire.end is not None,  # type: ignore[misc]
            what="more output",
        )
        runner.credit("j1", 3)
    assert await runner.wait_idle(5)
    assert not [m for m in wire.sent if isinstance(m, JobError)]
    assert [c.seq for c in wire.chunks] == list(range(len(expected)))
    assert "".join(c.text for c in wire.chunks) == "".join(expected)  # nothing lost or doubled
    assert wire.end is not None
    assert wire.end.usage == Usage(7, len(expected))  # the tokens produced, the real prompt
    assert wire.end.finish_reason == ("stop" if max_tokens is None else "length")
    assert runner.stats.jobs_paused >= 2  # it really paused and continued
    assert engine.produced == len(expected)  # and generated each token once
    assert all(r.continuation == "".join(expected)[: len(r.continuation)] for r in engine.requests)


async def test_a_reader_that_keeps_up_never_pauses() -> None:
    engine = FakeEngine(TOKENS[:100])
    runner, wire = await _start(engine, _request())
    for _ in range(len(engine.tokens) // WINDOW + 1):  # credit for the whole answer
        runner.credit("j1", WINDOW)
    assert await runner.wait_idle(5)
    assert runner.stats.jobs_paused == 0 and len(engine.requests) == 1
    assert "".join(c.text for c in wire.chunks) == "".join(TOKENS[:100])


async def test_a_grammar_job_is_not_paused() -> None:
    # A grammar restarts at the continuation, so such a job is never paused: it runs
    # on (bounded by the tracker's stall timeout and max_tokens) as before.
    engine = EagerEngine(TOKENS[:60])
    runner, _ = await _start(engine, _request(response_format='{"type": "json_object"}'))
    try:
        # Unread, it still reads the engine to its end (a paused job would not).
        await eventually(lambda: engine.finished == 1, what="the runner to read the finish")
        assert runner.stats.jobs_paused == 0 and len(engine.requests) == 1
    finally:
        runner.cancel_all()
        assert await runner.wait_idle(5)


# --- through the network: what an HTTP client sees ---------------------------------------


async def test_a_stream_read_late_is_whole_and_charged_what_was_produced(
    net: LocalNetwork,
) -> None:
    # 2,000 chunks of 16 KiB (32 MiB): more than the window and socket buffers hold.
    tokens = [f"{i:04d}" + "x" * 16380 for i in range(2000)]
    engine = EagerEngine(tokens)
    node = await net.add_node(engine, "n1")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    body["stream_options"] = {"include_usage": True}
    async with net.client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        runner = node.agent.runner
        await eventually(lambda: runner.stats.jobs_paused >= 1, what="the unread job to pause")
        await eventually(lambda: engine.active == 0, what="the engine to stop")
        assert engine.produced < len(tokens) // 2
        text, usage = [], None
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices") or ():
                text.append(choice["delta"].get("content") or "")
    assert "".join(text) == "".join(tokens)
    assert usage is not None and usage["completion_tokens"] == len(tokens)
    assert usage["prompt_tokens"] == engine.prompt_tokens
    assert engine.produced == len(tokens) and engine.finished == 1
    await eventually(
        lambda: all(c.state.inflight == 0 for c in net.tracker.registry), what="in-flight 0"
    )
