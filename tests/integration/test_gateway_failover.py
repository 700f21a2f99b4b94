"""Failure handling over the real wire: failover, resume, cancellation, flow control."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import (
    ANSWER,
    MODEL,
    Failure,
    FakeEngine,
    LocalNetwork,
    RunningNode,
    eventually,
    sse_payloads,
    streamed_text,
)

from lichen.gateway.completions import NODE_HEADER
from lichen.node.jobs import PAUSE_AFTER
from lichen.wire.messages import ChatMessage, GenerationRequest, SamplingParams

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TEXT = "".join(ANSWER)
LONG = [f" w{i}" for i in range(40)]


def chat_body(**changes: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}]} | changes


async def _two_nodes(net: LocalNetwork, first: FakeEngine, second: FakeEngine) -> RunningNode:
    """Node A joins first, so with equal load it is tried first; returns A."""
    a = await net.add_node(first, "a")
    await net.add_node(second, "b")
    assert [c.name for c in net.completions.scheduler.candidates(MODEL)] == ["a", "b"]
    return a


def _jobs_gone(net: LocalNetwork) -> bool:
    tracker_side = all(not c.jobs and c.state.inflight == 0 for c in net.tracker.registry)
    node_side = all(len(n.agent.runner) == 0 for n in net.nodes)
    return tracker_side and node_side


# --- failover before the first token ------------------------------------------------


@pytest.mark.parametrize("failure", ["raise", "crash"])
@pytest.mark.parametrize("stream", [False, True])
async def test_failover_before_the_first_token(
    net: LocalNetwork, failure: Failure, stream: bool
) -> None:
    a, b = FakeEngine(fail_after=0, failure=failure), FakeEngine()
    await _two_nodes(net, a, b)
    r = await net.client.post(
        CHAT, json=chat_body(stream=stream, stream_options={"include_usage": True})
    )
    assert r.status_code == 200, r.text
    assert len(a.requests) == 1 and len(b.requests) == 1  # A was tried, B answered
    assert r.headers[NODE_HEADER] == net.nodes[1].peer_id
    if stream:
        payloads = sse_payloads(r.text)
        assert streamed_text(payloads) == TEXT
        assert payloads[-1]["usage"]["completion_tokens"] == len(ANSWER)
    else:
        assert r.json()["choices"][0]["message"]["content"] == TEXT
        assert r.json()["usage"]["completion_tokens"] == len(ANSWER)
    assert b.requests[0].continuation == ""
    await eventually(lambda: _jobs_gone(net), what="jobs to be released")


async def test_failover_when_a_node_vanishes_before_answering(net: LocalNetwork) -> None:
    a, b = FakeEngine(fail_after=0, failure="stall"), FakeEngine()
    node_a = await _two_nodes(net, a, b)
    request = asyncio.create_task(net.client.post(CHAT, json=chat_body()))
    await asyncio.wait_for(a.stalled.wait(), 5)
    await net.kill(node_a)
    r = await request
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == TEXT


async def test_every_node_failing_is_an_error_status_not_a_200(net: LocalNetwork) -> None:
    await _two_nodes(net, FakeEngine(fail_after=0), FakeEngine(fail_after=0))
    for stream in (False, True):
        r = await net.client.post(CHAT, json=chat_body(stream=stream))
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "node_failed"


# --- resume after the first token ----------------------------------------------------


@pytest.mark.parametrize("failure", ["stall", "raise", "crash"])
async def test_mid_stream_resume_continues_on_another_node(
    net: LocalNetwork, failure: Failure
) -> None:
    a = FakeEngine(LONG, fail_after=3, failure=failure)
    b = FakeEngine(LONG)
    node_a = await _two_nodes(net, a, b)

    async def consume() -> tuple[int, str]:
        async with net.client.stream(
            "POST", CHAT, json=chat_body(stream=True, stream_options={"include_usage": True})
        ) as r:
            return r.status_code, "".join([chunk async for chunk in r.aiter_text()])

    request = asyncio.create_task(consume())
    if failure == "stall":  # the node dies: its link closes with the job half done
        await asyncio.wait_for(a.stalled.wait(), 5)
        await net.kill(node_a)
    status, body = await asyncio.wait_for(request, 10)
    assert status == 200
    payloads = sse_payloads(body)
    assert all("error" not in p for p in payloads)
    # one unbroken stream: nothing repeated, nothing lost
    assert streamed_text(payloads) == "".join(LONG)
    assert len({p["id"] for p in payloads}) == 1
    finishes = [p["choices"][0]["finish_reason"] for p in payloads if p["choices"]]
    assert finishes.count("stop") == 1 and finishes[-1] == "stop"
    # B was asked to continue after exactly what A had streamed
    (resumed,) = b.requests
    assert resumed.continuation == "".join(LONG[:3])
    # usage covers the whole answer: A's 3 tokens + B's 37, the original prompt only
    assert payloads[-1]["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": len(LONG),
        "total_tokens": 5 + len(LONG),
    }
    await eventually(lambda: _jobs_gone(net), what="jobs to be released")


async def test_resume_respects_the_remaining_token_budget(net: LocalNetwork) -> None:
    a, b = FakeEngine(LONG, fail_after=3), FakeEngine(LONG)
    await _two_nodes(net, a, b)
    r = await net.client.post(CHAT, json=chat_body(max_tokens=10))
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "".join(LONG[:10])
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15}
    assert b.requests[0].params.max_tokens == 7


async def test_completion_resume_is_seamless_too(net: LocalNetwork) -> None:
    a, b = FakeEngine(LONG, fail_after=5), FakeEngine(LONG)
    await _two_nodes(net, a, b)
    r = await net.client.post(
        COMPLETIONS, json={"model": MODEL, "prompt": "p", "max_tokens": 100, "stream": True}
    )
    assert streamed_text(sse_payloads(r.text)) == "".join(LONG)
    assert b.requests[0].continuation == "".join(LONG[:5])
    assert b.requests[0].prompt == "p"


async def test_failure_with_nowhere_to_resume_ends_the_stream_with_an_error(
    net: LocalNetwork,
) -> None:
    await net.add_node(FakeEngine(LONG, fail_after=3), "only")
    r = await net.client.post(CHAT, json=chat_body(stream=True))
    assert r.status_code == 200  # the headers went out with the first token
    payloads = sse_payloads(r.text)
    assert streamed_text(payloads) == "".join(LONG[:3])
    assert payloads[-1]["error"]["code"] == "node_failed"
    assert all(p["choices"][0]["finish_reason"] is None for p in payloads if p.get("choices"))


# --- cancellation --------------------------------------------------------------------


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_client_disconnect_cancels_the_job_on_the_node(net: LocalNetwork, path: str) -> None:
    engine = FakeEngine(LONG * 25, delay_s=0.02)  # ~20 s if nobody stopped it
    await net.add_node(engine, "n1")
    body = (
        chat_body(stream=True)
        if path == CHAT
        else {"model": MODEL, "prompt": "p", "max_tokens": 2000, "stream": True}
    )
    async with net.client.stream("POST", path, json=body) as r:
        assert r.status_code == 200
        seen = ""
        async for text in r.aiter_text():
            seen += text
            if seen.count(" w") >= 3:  # three tokens arrived
                break
    await eventually(lambda: engine.cancelled == 1, what="the engine stream to be closed")
    assert engine.finished == 0
    assert engine.produced < len(engine.tokens) // 2
    await eventually(lambda: _jobs_gone(net), what="jobs to be released")
    # Nothing generates any more: the one generation is closed and none was started again.
    assert engine.active == 0
    assert len(engine.requests) == 1


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_client_giving_up_on_a_non_streaming_request_cancels_the_job(
    net: LocalNetwork, path: str
) -> None:
    engine = FakeEngine(LONG * 25, delay_s=0.02)
    await net.add_node(engine, "n1")
    body = chat_body() if path == CHAT else {"model": MODEL, "prompt": "p", "max_tokens": 2000}
    with pytest.raises(httpx.ReadTimeout):
        await net.client.post(path, json=body, timeout=0.5)
    await eventually(lambda: engine.cancelled == 1, what="the engine stream to be closed")
    assert engine.finished == 0
    await eventually(lambda: _jobs_gone(net), what="jobs to be released")
    await eventually(lambda: len(net.records) == 1, what="the request record")
    assert net.records[0].status == 499


async def test_deadline_cancels_the_job_and_answers_504(tmp_path: Path) -> None:
    network = await LocalNetwork(tmp_path, timeout_s=0.5).start()
    try:
        engine = FakeEngine(LONG, delay_s=0.1)
        await network.add_node(engine, "slow")
        r = await network.client.post(CHAT, json=chat_body())
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "timeout"
        await eventually(lambda: engine.cancelled == 1, what="the job to be cancelled")
    finally:
        await network.close()


# --- flow control --------------------------------------------------------------------


async def test_a_consumer_that_does_not_read_bounds_what_the_node_sends(
    net: LocalNetwork,
) -> None:
    engine = FakeEngine([f"t{i} " for i in range(200)])
    node = await net.add_node(engine, "n1")
    conn = net.connection(node)
    request = GenerationRequest(
        kind="chat",
        model=MODEL,
        messages=[ChatMessage(role="user", content="x")],
        params=SamplingParams(max_tokens=200),
    )
    window = 8
    job = await conn.start_job(request, deadline_ms=0, window=window)
    try:
        await eventually(lambda: job.backlog == window, what="the window to fill")
        # The engine stops a small buffer past the window: its generation is paused
        # (closed; an unbounded sender would have run it to the end of its answer)...
        await eventually(lambda: engine.active == 0, what="the engine to pause")
        assert engine.produced <= window + PAUSE_AFTER + 1
        # ...and the node waits for credit, having sent exactly the window.
        (running,) = node.agent.runner.jobs.values()
        assert running.credit.locked()
        assert job.backlog == window

        # The consumer takes half a window: exactly that much credit flows back,
        # served from the paused job's buffer (the engine stays paused).
        for _ in range(window // 2):
            await job.__anext__()
        await eventually(lambda: job.backlog == window, what="the window to refill")
        await eventually(running.credit.locked, what="the node to wait for credit again")
        assert job.backlog == window
        assert engine.active == 0 and engine.produced <= window + PAUSE_AFTER + 1

        # A consumer that reads everything gets everything, in order.
        texts = []
        async for event in job:
            texts.append(getattr(event, "text", None))
        assert [t for t in texts if t is not None] == engine.tokens[window // 2 :]
    finally:
        await job.aclose()
    assert engine.finished == 1


async def test_http_client_that_stops_reading_does_not_run_the_node_ahead(
    net: LocalNetwork,
) -> None:
    # 2,000 chunks of 16 KiB (32 MiB): far more than loopback socket buffers hold.
    engine = FakeEngine(["x" * 16384] * 2000)
    node = await net.add_node(engine, "n1")
    async with net.client.stream("POST", CHAT, json=chat_body(stream=True)) as r:
        assert r.status_code == 200
        runner = node.agent.runner
        # Read nothing: back-pressure must reach the engine and pause it (the job stays).
        await eventually(
            lambda: engine.active == 0 and bool(runner.jobs),
            timeout=120.0,
            what="back-pressure to pause the engine",
        )
        # It stopped long before the end of its answer.
        assert engine.produced < len(engine.tokens) // 2
        assert engine.finished == 0
    # The client left: the job is gone from the node (paused or not, nothing generates).
    await eventually(lambda: not runner.jobs and engine.active == 0, what="the job to end")
    assert engine.cancelled >= 1 and engine.finished == 0
