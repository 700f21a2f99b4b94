"""Hostile nodes on the real wire: every lie, stall and flood gets a typed outcome.

Each test joins :class:`hostile_node.HostileNode` (real codec, handshake and keys)
and, where it matters, an honest node (a real ``NodeAgent`` on a ``FakeEngine``)
to a real tracker on loopback, then routes requests with the real router. After
every test, no job is left in flight anywhere (the fixture checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import pytest
from fakes import (
    ANSWER,
    MODEL,
    FakeEngine,
    LocalNetwork,
    RunningNode,
    assert_openai_error,
    eventually,
    sse_payloads,
    start_owned_node,
    streamed_text,
)
from fastapi import FastAPI

from hostile_node import Beat, HostileNode, Script, model_info
from lichen.engines.base import Delta, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import sign
from lichen.identity.store import load_identity
from lichen.node.jobs import QUEUE_PER_SLOT
from lichen.routing.embed import EmbeddingRouter
from lichen.routing.router import Router
from lichen.routing.scheduler import Scheduler
from lichen.server import HttpServer
from lichen.tracker.admission import OwnerAdmission
from lichen.tracker.api import describe_node
from lichen.tracker.connection import (
    FLOOD_BURST,
    MAX_QUEUE_DEPTH,
    MAX_TOKENS_PER_S,
    NodeConnection,
)
from lichen.tracker.service import NODE_PATH, TrackerService
from lichen.wire.messages import (
    ChatMessage,
    EmbeddingRequest,
    Error,
    GenerationRequest,
    Heartbeat,
    JobChunk,
    JobEnd,
    Manifest,
    SamplingParams,
    Telemetry,
    Usage,
)
from lichen.wire.vectors import pack_vector

HONEST_TEXT = "".join(ANSWER)


def chat(**params: object) -> GenerationRequest:
    return GenerationRequest(
        kind="chat",
        model=MODEL,
        messages=[ChatMessage(role="user", content="Say hi")],
        params=msgspec.convert(params, SamplingParams),
    )


@dataclass
class Net:
    """A real tracker on loopback with a router over it (no gateway: these are node tests)."""

    root: Path
    hostile: list[HostileNode] = field(default_factory=list)
    honest: list[RunningNode] = field(default_factory=list)

    async def start(self) -> Net:
        self.identity = load_identity(self.root / "tracker")
        self.tracker = TrackerService(
            network_key=self.identity.network_key,
            admission=OwnerAdmission(self.identity.account_public),
        )
        self.scheduler = Scheduler(self.tracker.registry)
        self.router = Router(self.scheduler, first_token_timeout_s=0.5, stall_timeout_s=None)
        self.embedder = EmbeddingRouter(self.scheduler)
        app = FastAPI()
        app.add_api_websocket_route(NODE_PATH, self.tracker.endpoint)
        await self.tracker.start()
        self.http = HttpServer(app, host="127.0.0.1", port=0)
        self.port = await self.http.start()
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{NODE_PATH}"

    def node(self, name: str, **kw: object) -> HostileNode:
        node = HostileNode(
            self.root / name,
            owner_dir=self.root / "tracker",
            url=self.url,
            network_public=self.identity.network_public,
            name=name,
            **kw,  # type: ignore[arg-type]
        )
        self.hostile.append(node)
        return node

    async def join(self, name: str, **kw: object) -> HostileNode:
        """A hostile node that joined and heartbeat. Unless told otherwise it claims the
        top speed, so the scheduler tries it before the honest nodes (as an attacker would)."""
        kw.setdefault("beat", Beat(tokens_per_s=MAX_TOKENS_PER_S))
        node = self.node(name, **kw)
        await node.connect()
        await eventually(
            lambda: self.tracker.registry.get(node.peer_id) is not None, what=f"{name} to join"
        )
        conn = self.conn(node.peer_id)
        await eventually(lambda: conn.state.tokens_per_s > 0, what=f"{name}'s heartbeat")
        return node

    async def add_honest(self, engine: FakeEngine, name: str) -> RunningNode:
        node = start_owned_node(
            self.root / name,
            owner_dir=self.root / "tracker",
            port=self.port,
            network_public=self.identity.network_public,
            engine=engine,
            name=name,
        )
        self.honest.append(node)
        await eventually(
            lambda: self.tracker.registry.get(node.peer_id) is not None, what=f"{name} to join"
        )
        return node

    def conn(self, peer_id: str) -> NodeConnection:
        conn = self.tracker.registry.get(peer_id)
        assert conn is not None
        return conn

    def idle(self) -> bool:
        tracker_side = all(not c.jobs and c.state.inflight == 0 for c in self.tracker.registry)
        return tracker_side and all(len(n.agent.runner) == 0 for n in self.honest)

    async def close(self) -> None:
        for hostile in self.hostile:
            await hostile.close()
        for node in self.honest:
            await node.agent.stop()
        await asyncio.gather(*(n.task for n in self.honest), return_exceptions=True)
        await self.tracker.stop()
        await self.http.stop()


@pytest.fixture
async def hostile_net(tmp_path: Path) -> AsyncIterator[Net]:
    network = await Net(tmp_path).start()
    try:
        yield network
        # Nothing leaks: every job a hostile case started is released on both sides.
        await eventually(network.idle, what="in-flight counts to return to 0")
    finally:
        await network.close()


async def answer(router: Router, request: GenerationRequest) -> tuple[str, Finish]:
    text = ""
    async with contextlib.aclosing(router.stream(request, deadline_s=10)) as events:
        async for event in events:
            if isinstance(event, Delta):
                text += event.text
            else:
                return text, event
    raise AssertionError("no finish")


async def failure(router: Router, request: GenerationRequest) -> LichenError:
    with pytest.raises(LichenError) as info:
        await answer(router, request)
    return info.value


# --- 1. decode-time validation of every frame ------------------------------------------


@pytest.mark.parametrize(
    "beat",
    [
        Heartbeat(free_slots=2, queue_depth=0, tokens_per_s=math.nan),
        Heartbeat(free_slots=2, queue_depth=0, tokens_per_s=math.inf),
        Heartbeat(free_slots=2, queue_depth=-(10**9), tokens_per_s=50.0),
        Heartbeat(free_slots=-1, queue_depth=0, tokens_per_s=50.0),
        Heartbeat(free_slots=2, queue_depth=0, tokens_per_s=-5.0),
    ],
    ids=["nan-speed", "inf-speed", "negative-queue", "negative-slots", "negative-speed"],
)
async def test_a_lying_heartbeat_is_a_protocol_error_and_the_node_is_dropped(
    hostile_net: Net, beat: Heartbeat
) -> None:
    honest = await hostile_net.add_honest(FakeEngine(), "honest")
    liar = await hostile_net.join("liar")
    await liar.send(beat)
    await liar.wait_closed()
    assert liar.error is not None and liar.error.code == ErrorCode.PROTOCOL_ERROR.value
    await eventually(lambda: hostile_net.tracker.registry.get(liar.peer_id) is None, what="drop")
    text, _ = await answer(hostile_net.router, chat())
    assert text == HONEST_TEXT  # the network keeps serving
    assert hostile_net.conn(honest.peer_id).state.served == 1


async def test_heartbeat_values_are_clamped_to_the_manifest(hostile_net: Net) -> None:
    liar = await hostile_net.join("liar", models=[model_info(slots=3)])
    await liar.send(Heartbeat(free_slots=10**6, queue_depth=10**6, tokens_per_s=1e7))
    st = hostile_net.conn(liar.peer_id).state
    await eventually(lambda: st.free_slots == 3, what="the heartbeat")
    assert st.queue_depth == MAX_QUEUE_DEPTH
    assert st.tokens_per_s == MAX_TOKENS_PER_S


@pytest.mark.parametrize(
    "frame",
    [
        JobChunk(job_id="j", seq=-1, text="x"),
        JobChunk(job_id="j", seq=0, text="x", tokens=-5),
        JobChunk(job_id="j", seq=0, text="x" * 100_000),
        JobEnd(job_id="j", finish_reason="stop", usage=Usage(-1, 3)),
        JobEnd(job_id="j", finish_reason="stop", usage=Usage(1, 10**12)),
        JobEnd(job_id="j", finish_reason="<script>", usage=Usage(1, 1)),
        Error(code="x", message="m" * 100_000),
        Telemetry(tokens_per_s=math.nan),
        Telemetry(models=["m"] * 1000),
    ],
    ids=[
        "negative-seq",
        "negative-tokens",
        "huge-chunk",
        "negative-usage",
        "huge-usage",
        "odd-finish",
        "huge-error",
        "nan-telemetry",
        "many-models-telemetry",
    ],
)
async def test_out_of_bounds_frames_close_the_link_with_a_typed_error(
    hostile_net: Net, frame: JobChunk | JobEnd | Error | Telemetry
) -> None:
    liar = await hostile_net.join("liar")
    await liar.send(frame)
    await liar.wait_closed()
    assert liar.error is not None and liar.error.code == ErrorCode.PROTOCOL_ERROR.value
    await eventually(lambda: len(hostile_net.tracker.registry) == 0, what="the node to be dropped")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xc1garbage", ErrorCode.PROTOCOL_ERROR),
        (msgspec.msgpack.encode([1, {"t": "hb", "free_slots": "lots"}]), ErrorCode.PROTOCOL_ERROR),
        (b"\x00" * (5 * 1024 * 1024), ErrorCode.FRAME_TOO_LARGE),
    ],
    ids=["garbage", "wrong-type", "oversized"],
)
async def test_malformed_frames_close_the_link_and_the_tracker_keeps_going(
    hostile_net: Net, frame: bytes, code: ErrorCode
) -> None:
    liar = await hostile_net.join("liar")
    await liar.send_raw(frame)
    await liar.wait_closed()
    assert liar.error is not None and liar.error.code == code.value
    await hostile_net.add_honest(FakeEngine(), "honest")  # the tracker still admits and serves
    text, _ = await answer(hostile_net.router, chat())
    assert text == HONEST_TEXT


async def test_a_node_flooding_frames_is_disconnected(hostile_net: Net) -> None:
    honest = await hostile_net.add_honest(FakeEngine(), "honest")
    flooder = await hostile_net.join("flooder")
    beat = Heartbeat(free_slots=2, queue_depth=0, tokens_per_s=50.0)
    await flooder.flood(beat, int(FLOOD_BURST) * 4)
    await flooder.wait_closed()
    assert flooder.error is not None and flooder.error.code == ErrorCode.PROTOCOL_ERROR.value
    assert "too fast" in flooder.error.message
    assert hostile_net.tracker.registry.get(honest.peer_id) is not None
    text, _ = await answer(hostile_net.router, chat())
    assert text == HONEST_TEXT


async def test_a_node_ignoring_the_credit_window_is_disconnected(hostile_net: Net) -> None:
    tokens = [f" t{i}" for i in range(50)]
    pusher = await hostile_net.join("pusher", script=Script(tokens=tokens, ignore_window=True))
    job = await hostile_net.conn(pusher.peer_id).start_job(chat(), deadline_ms=0, window=8)
    await pusher.wait_closed()  # nobody reads: 50 chunks overrun a window of 8
    assert pusher.error is not None and pusher.error.code == ErrorCode.PROTOCOL_ERROR.value
    with pytest.raises(LichenError) as info:
        async for _event in job:
            pass  # what arrived within the window, then the typed end
    assert info.value.code is ErrorCode.NODE_FAILED
    await job.aclose()


async def test_job_output_is_not_counted_as_a_flood(hostile_net: Net) -> None:
    tokens = [f" t{i}" for i in range(int(FLOOD_BURST) + 100)]
    await hostile_net.join("chatty", script=Script(tokens=tokens))
    text, _ = await answer(hostile_net.router, chat())
    assert text == "".join(tokens)


# --- 2. manifest caps ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "models"),
    [
        ("n", [model_info(f"m{i}") for i in range(8000)]),
        ("n", [model_info(f"m{i}") for i in range(65)]),
        ("x" * 100_000, [model_info()]),
        ("bad\x00name", [model_info()]),
        ("n", [model_info("m" * 1000)]),
        ("n", [model_info("<script>alert(1)</script>")]),
        ("n", [model_info(slots=-3)]),
        ("n", [model_info(context=-1)]),
    ],
    ids=[
        "8000-models",
        "65-models",
        "100k-name",
        "control-char-name",
        "long-model-name",
        "markup-model-name",
        "negative-slots",
        "negative-context",
    ],
)
async def test_oversized_or_malformed_manifests_are_refused(
    hostile_net: Net, name: str, models: list[object]
) -> None:
    liar = hostile_net.node("liar")
    await liar.connect(manifest=liar.manifest(name=name, models=models))  # type: ignore[arg-type]
    await liar.wait_closed()
    assert liar.error is not None and liar.error.code == ErrorCode.MANIFEST_INVALID.value
    assert len(hostile_net.tracker.registry) == 0


async def test_a_manifest_body_over_the_size_cap_is_refused(hostile_net: Net) -> None:
    liar = hostile_net.node("liar")
    body = msgspec.msgpack.decode(liar.manifest().body)
    body["padding"] = "x" * 100_000  # unknown fields are ignored, but still bytes to hold
    raw = msgspec.msgpack.encode(body)
    await liar.connect(manifest=Manifest(body=raw, signature=sign(liar.identity.device_key, raw)))
    await liar.wait_closed()
    assert liar.error is not None and liar.error.code == ErrorCode.MANIFEST_INVALID.value


async def test_a_later_manifest_with_too_many_models_disconnects_the_node(hostile_net: Net) -> None:
    liar = await hostile_net.join("liar")
    await liar.send(liar.manifest(models=[model_info(f"m{i}") for i in range(8000)]))
    await liar.wait_closed()
    assert liar.error is not None and liar.error.code == ErrorCode.MANIFEST_INVALID.value
    await eventually(lambda: not hostile_net.tracker.registry.has_model("m7999"), what="no models")
    assert not hostile_net.tracker.registry.has_model(MODEL)


# --- 3. router: first-token timeout, cancel, cleanup, client errors -------------------


async def test_a_node_that_never_starts_answering_fails_over_and_loses_reputation(
    hostile_net: Net,
) -> None:
    staller = await hostile_net.join("staller", script=Script(stall=True))
    await hostile_net.add_honest(FakeEngine(), "honest")
    assert hostile_net.scheduler.candidates(MODEL)[0].peer_id == staller.peer_id  # it ranks first
    before = hostile_net.scheduler.reputation.score(staller.peer_id)
    text, _ = await answer(hostile_net.router, chat())
    assert text == HONEST_TEXT
    assert [j.job_id for j in staller.jobs] == staller.cancels  # its job was cancelled
    assert hostile_net.conn(staller.peer_id).state.failures == 1
    assert hostile_net.scheduler.reputation.score(staller.peer_id) < before
    # Its lies stop paying: a few requests on, every one answered, it no longer ranks first.
    for _ in range(3):
        text, _ = await answer(hostile_net.router, chat())
        assert text == HONEST_TEXT
    assert len(staller.jobs) <= 3
    assert hostile_net.scheduler.candidates(MODEL)[0].peer_id != staller.peer_id


async def test_a_job_queued_behind_busy_slots_is_not_blamed_for_a_late_first_token(
    hostile_net: Net,
) -> None:
    engine = FakeEngine(slots=1, fail_after=0, failure="stall")  # its one slot hangs
    busy = await hostile_net.add_honest(engine, "busy")
    held = await hostile_net.conn(busy.peer_id).start_job(chat(), deadline_ms=0)
    before = hostile_net.scheduler.reputation.score(busy.peer_id)
    error = await failure(hostile_net.router, chat())  # waits in the node's queue past the timeout
    assert error.code is ErrorCode.NO_CAPACITY
    assert hostile_net.conn(busy.peer_id).state.failures == 0
    assert hostile_net.scheduler.reputation.score(busy.peer_id) == before
    await held.aclose()


async def test_a_consumer_leaving_before_the_first_token_cancels_the_job(hostile_net: Net) -> None:
    hostile_net.router.first_token_timeout_s = None  # only the consumer leaving can end it
    staller = await hostile_net.join("staller", script=Script(stall=True))
    events = hostile_net.router.stream(chat(), deadline_s=30)
    waiting = asyncio.ensure_future(anext(events))
    await eventually(lambda: len(staller.jobs) == 1, what="the job to reach the node")
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await events.aclose()
    await eventually(lambda: staller.cancels == [staller.jobs[0].job_id], what="JobCancel")
    assert hostile_net.conn(staller.peer_id).state.failures == 0  # the client left: not its fault


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"seed": 2**64}, None),
        ({"seed": 2**63}, "seed"),
        ({"max_tokens": 2**64}, None),
        ({"temperature": math.nan}, "temperature"),
        ({"top_p": math.inf}, "top_p"),
        ({"stop": ["x"] * 1000}, "stop"),
    ],
    ids=["seed-2**64", "seed-2**63", "max-tokens-2**64", "nan-temperature", "inf-top-p", "stops"],
)
async def test_a_request_the_wire_cannot_carry_is_the_clients_error_and_leaks_nothing(
    hostile_net: Net, params: dict[str, object], param: str | None
) -> None:
    node = await hostile_net.join("node")
    request = GenerationRequest(
        kind="chat",
        model=MODEL,
        messages=[ChatMessage(role="user", content="hi")],
        params=SamplingParams(**params),  # type: ignore[arg-type]
    )
    error = await failure(hostile_net.router, request)
    assert error.code is ErrorCode.INVALID_REQUEST
    if param is not None:
        assert error.param == param
    assert node.jobs == []  # nothing reached the node
    conn = hostile_net.conn(node.peer_id)
    assert conn.state.inflight == 0 and conn.state.failures == 0


async def test_any_exception_while_starting_a_job_releases_it(
    hostile_net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await hostile_net.join("node")
    conn = hostile_net.conn(node.peer_id)

    async def broken(_msg: object) -> None:
        raise RuntimeError("a bug on the way out")

    monkeypatch.setattr(conn.link, "send", broken)
    with pytest.raises(RuntimeError):
        await conn.start_job(chat(), deadline_ms=0)
    assert conn.state.inflight == 0 and not conn.jobs
    monkeypatch.undo()
    await eventually(lambda: len(node.cancels) == 1, what="a JobCancel, in case it arrived")


@pytest.mark.parametrize(
    "code",
    [
        ErrorCode.INVALID_REQUEST,
        ErrorCode.CONTEXT_LENGTH_EXCEEDED,
        ErrorCode.CONTENT_POLICY_VIOLATION,
    ],
)
async def test_client_caused_errors_are_not_retried_or_counted(
    hostile_net: Net, code: ErrorCode
) -> None:
    picky = await hostile_net.join(
        "picky", script=Script(error=(code.value, "your request is bad"))
    )
    honest = await hostile_net.add_honest(FakeEngine(), "honest")
    before = hostile_net.scheduler.reputation.score(picky.peer_id)
    error = await failure(hostile_net.router, chat())
    assert error.code is code
    assert honest.engine.requests == []  # not retried elsewhere
    assert hostile_net.conn(picky.peer_id).state.failures == 0
    assert hostile_net.scheduler.reputation.score(picky.peer_id) == before


@pytest.mark.parametrize(
    "code", ["insufficient_quota", "invalid_api_key", "rate_limit_exceeded", "made-up"]
)
async def test_a_node_claiming_errors_it_cannot_know_is_failed_over(
    hostile_net: Net, code: str
) -> None:
    liar = await hostile_net.join("liar", script=Script(error=(code, "pay up")))
    await hostile_net.add_honest(FakeEngine(), "honest")
    text, _ = await answer(hostile_net.router, chat())
    assert text == HONEST_TEXT
    assert hostile_net.conn(liar.peer_id).state.failures == 1


async def test_a_node_denying_a_model_it_advertised_is_failed_over(hostile_net: Net) -> None:
    liar = await hostile_net.join("liar", script=Script(error=("model_not_found", "no such model")))
    await hostile_net.add_honest(FakeEngine(), "honest")
    text, _ = await answer(hostile_net.router, chat())
    assert text == HONEST_TEXT
    assert hostile_net.scheduler.reputation.score(liar.peer_id) < 0.9


# --- 4. stalled consumers ----------------------------------------------------------------


async def test_a_consumer_that_stops_reading_has_its_job_cancelled_with_a_timeout(
    hostile_net: Net,
) -> None:
    hostile_net.router.stall_timeout_s = 0.3
    engine = FakeEngine([f" w{i}" for i in range(500)])
    node = await hostile_net.add_honest(engine, "honest")
    events = hostile_net.router.stream(chat(), deadline_s=30)
    first = await anext(events)
    assert isinstance(first, Delta)
    # The consumer stops pulling: within the stall timeout the node's slot is given back.
    await eventually(lambda: engine.cancelled == 1, what="the engine to be cancelled")
    await eventually(hostile_net.idle, what="the job to be released")
    assert engine.finished == 0
    with pytest.raises(LichenError) as info:
        async for _event in events:
            pass  # what was already delivered comes first, then the typed end
    assert info.value.code is ErrorCode.TIMEOUT
    await events.aclose()
    assert hostile_net.conn(node.peer_id).state.failures == 0  # the node did nothing wrong


async def test_a_reading_consumer_is_never_stalled_out(hostile_net: Net) -> None:
    hostile_net.router.stall_timeout_s = 0.3
    await hostile_net.add_honest(FakeEngine(ANSWER, delay_s=0.1), "slow")  # slow node, not client
    text, _ = await answer(hostile_net.router, chat())
    assert text == HONEST_TEXT


# --- 5. bounded node queues --------------------------------------------------------------


async def test_a_full_node_refuses_and_the_router_fails_over(hostile_net: Net) -> None:
    full = await hostile_net.join(
        "full", script=Script(error=("no_capacity", "slots and queue full"))
    )
    spare = await hostile_net.add_honest(FakeEngine(), "spare")
    before = hostile_net.scheduler.reputation.score(full.peer_id)
    text, _ = await answer(hostile_net.router, chat())
    assert text == HONEST_TEXT
    assert len(full.jobs) == 1 and spare.engine.finished == 1
    assert hostile_net.conn(full.peer_id).state.failures == 0  # full is not failed
    assert hostile_net.scheduler.reputation.score(full.peer_id) == before


async def test_every_node_full_is_no_capacity_with_retry_after(hostile_net: Net) -> None:
    full = FakeEngine(slots=1, fail_after=0, failure="stall")
    busy = await hostile_net.add_honest(full, "busy")
    conn = hostile_net.conn(busy.peer_id)
    capacity = busy.agent.runner.capacity(MODEL)
    assert capacity == 1 + QUEUE_PER_SLOT
    held = [await conn.start_job(chat(), deadline_ms=0) for _ in range(capacity)]
    await eventually(lambda: full.active == capacity, what="the jobs to start")
    hostile_net.router.first_token_timeout_s = None
    error = await failure(hostile_net.router, chat())
    assert error.code is ErrorCode.NO_CAPACITY
    assert error.headers.get("Retry-After") == "1"
    assert busy.agent.runner.refused == 1
    assert len(busy.agent.runner.jobs) == capacity  # slots + queue, never more
    for job in held:
        await job.aclose()


# --- 6. malformed node output ------------------------------------------------------------

BAD_OUTPUT = {  # each sends the honest answer's tokens, so a resume can finish it
    "tool-calls-not-json": Script(ANSWER, tool_calls="{not json"),
    "tool-calls-not-objects": Script(ANSWER, tool_calls="[1, 2]"),
    "tool-calls-bad-index": Script(ANSWER, tool_calls='[{"index": "x"}]'),
    "tool-calls-bad-function": Script(ANSWER, tool_calls='[{"index": 0, "function": [1]}]'),
    "seq-gap": Script(ANSWER, skip_seq=0),
    "tokens-inflated": Script(ANSWER, chunk_tokens=10**6),
    "usage-past-max-tokens": Script(ANSWER, usage=Usage(5, 10**6)),
    "usage-past-context": Script(ANSWER, usage=Usage(10**9, 2)),
}


@pytest.mark.parametrize("script", list(BAD_OUTPUT.values()), ids=list(BAD_OUTPUT))
async def test_malformed_output_before_the_first_token_fails_over(
    hostile_net: Net, script: Script
) -> None:
    liar = await hostile_net.join("liar", script=script, models=[model_info(context=4096)])
    await hostile_net.add_honest(FakeEngine(), "honest")
    before = hostile_net.scheduler.reputation.score(liar.peer_id)
    # A bad JobEnd comes after the whole text: the resume then only finishes it.
    text, finish = await answer(hostile_net.router, chat(max_tokens=64))
    assert text == HONEST_TEXT
    assert finish.finish_reason == "stop"
    assert hostile_net.conn(liar.peer_id).state.failures == 1
    assert hostile_net.scheduler.reputation.score(liar.peer_id) < before
    await eventually(lambda: liar.cancels == [liar.jobs[0].job_id], what="JobCancel")


async def test_malformed_output_mid_stream_resumes_on_an_honest_node(hostile_net: Net) -> None:
    liar = await hostile_net.join("liar", script=Script(tokens=ANSWER, skip_seq=3))
    honest = await hostile_net.add_honest(FakeEngine(), "honest")
    text, _ = await answer(hostile_net.router, chat())
    assert text == HONEST_TEXT  # nothing repeated, nothing lost
    assert honest.engine.requests[0].continuation == "".join(ANSWER[:3])
    assert hostile_net.conn(liar.peer_id).state.failures == 1


async def test_a_node_falling_silent_mid_stream_is_resumed_elsewhere(hostile_net: Net) -> None:
    liar = await hostile_net.join("liar", script=Script(ANSWER, stop_after=3))
    honest = await hostile_net.add_honest(FakeEngine(), "honest")
    text, _ = await answer(hostile_net.router, chat())
    assert text == HONEST_TEXT
    assert honest.engine.requests[0].continuation == "".join(ANSWER[:3])
    assert hostile_net.conn(liar.peer_id).state.failures == 1
    await eventually(lambda: liar.cancels == [liar.jobs[0].job_id], what="JobCancel")


async def test_malformed_output_with_nowhere_to_go_is_node_failed(hostile_net: Net) -> None:
    await hostile_net.join("liar", script=Script(tool_calls="{not json"))
    error = await failure(hostile_net.router, chat())
    assert error.code is ErrorCode.NODE_FAILED
    assert "tool_calls" in error.message


BAD_VECTORS = {
    "nan": Script(vectors=[pack_vector([math.nan, 0.0, 0.0, 0.0])] * 2),
    "inf": Script(vectors=[pack_vector([0.0, 0.0, -math.inf, 0.0])] * 2),
    "three-bytes": Script(vectors=[b"abc"] * 2),
    "empty": Script(vectors=[b""] * 2),
    "wrong-count": Script(vectors=[pack_vector([1.0] * 4)]),
    "ragged": Script(vectors=[pack_vector([1.0] * 4), pack_vector([1.0] * 8)]),
    "wrong-dimension": Script(vectors=[pack_vector([1.0] * 3)] * 2),
    "absurd-usage": Script(embed_usage=Usage(10**9, 0)),
}


@pytest.mark.parametrize("script", list(BAD_VECTORS.values()), ids=list(BAD_VECTORS))
async def test_bad_embeddings_are_the_nodes_failure(hostile_net: Net, script: Script) -> None:
    models = [model_info(embeddings=True)]
    liar = await hostile_net.join("liar", script=script, models=models)
    request = EmbeddingRequest(model=MODEL, inputs=["a", "b"], dimensions=4)
    with pytest.raises(LichenError) as info:
        await hostile_net.embedder.embed(request, deadline_s=5)
    assert info.value.code is ErrorCode.NODE_FAILED  # a 502, never the client's 400
    assert hostile_net.conn(liar.peer_id).state.failures == 1
    honest = await hostile_net.join("honest", models=models)
    done = await hostile_net.embedder.embed(request, deadline_s=5)
    assert done.peer_id == honest.peer_id
    assert done.result.vectors == [pack_vector([0.5, 0.25, 0.0, 1.0])] * 2


@pytest.mark.parametrize(
    "script", [Script(error=("node_failed", "boom")), Script(stall=True)], ids=["fails", "stalls"]
)
async def test_an_embedding_node_that_fails_or_never_answers_is_replaced(
    hostile_net: Net, script: Script
) -> None:
    hostile_net.embedder.answer_timeout_s = 0.5
    models = [model_info(embeddings=True)]
    liar = await hostile_net.join("liar", script=script, models=models)
    honest = await hostile_net.join("honest", models=models, beat=Beat())
    before = hostile_net.scheduler.reputation.score(liar.peer_id)
    done = await hostile_net.embedder.embed(
        EmbeddingRequest(model=MODEL, inputs=["a"]), deadline_s=5
    )
    assert done.peer_id == honest.peer_id
    assert hostile_net.scheduler.reputation.score(liar.peer_id) < before
    if script.stall:
        await eventually(lambda: liar.cancels == [liar.embeds[0].job_id], what="JobCancel")


# --- through the gateway: what a client sees ---------------------------------------------


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[LocalNetwork, list[HostileNode]]]:
    network = await LocalNetwork(tmp_path).start()
    nodes: list[HostileNode] = []
    try:
        yield network, nodes
        registry = network.tracker.registry
        await eventually(
            lambda: all(not c.jobs and c.state.inflight == 0 for c in registry),
            what="in-flight counts to return to 0",
        )
    finally:
        for node in nodes:
            await node.close()
        await network.close()


async def _hostile(
    network: LocalNetwork, nodes: list[HostileNode], name: str, **kw: object
) -> HostileNode:
    node = HostileNode(
        network.root / name,
        owner_dir=network.root / "tracker",
        url=f"ws://127.0.0.1:{network.port}{NODE_PATH}",
        network_public=network.identity.network_public,
        name=name,
        **kw,  # type: ignore[arg-type]
    )
    nodes.append(node)
    await node.connect()
    await eventually(lambda: network.tracker.registry.get(node.peer_id) is not None, what="join")
    return node


CHAT_BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}]}


async def test_a_stream_nothing_can_save_ends_with_an_error_event_and_done(
    gateway: tuple[LocalNetwork, list[HostileNode]],
) -> None:
    network, nodes = gateway
    await _hostile(network, nodes, "liar", script=Script(ANSWER, skip_seq=2))
    r = await network.client.post("/v1/chat/completions", json=CHAT_BODY | {"stream": True})
    assert r.status_code == 200
    payloads = sse_payloads(r.text)  # asserts the stream ends with `data: [DONE]`
    assert payloads[-1]["error"]["code"] == ErrorCode.NODE_FAILED.value
    assert streamed_text(payloads[:-1]) == "".join(ANSWER[:2])


async def test_bad_output_before_any_text_is_a_502_not_a_500(
    gateway: tuple[LocalNetwork, list[HostileNode]],
) -> None:
    network, nodes = gateway
    await _hostile(network, nodes, "liar", script=Script(tool_calls="{not json"))
    for stream in (False, True):
        r = await network.client.post("/v1/chat/completions", json=CHAT_BODY | {"stream": stream})
        assert_openai_error(r, 502, ErrorCode.NODE_FAILED.value)


async def test_every_candidate_full_is_a_503_with_retry_after(
    gateway: tuple[LocalNetwork, list[HostileNode]],
) -> None:
    network, nodes = gateway
    await _hostile(network, nodes, "full", script=Script(error=("no_capacity", "full")))
    r = await network.client.post("/v1/chat/completions", json=CHAT_BODY)
    assert_openai_error(r, 503, ErrorCode.NO_CAPACITY.value)
    assert r.headers["retry-after"] == "1"


async def test_a_nan_heartbeat_leaves_the_api_healthy(
    gateway: tuple[LocalNetwork, list[HostileNode]],
) -> None:
    network, nodes = gateway
    await network.add_node(FakeEngine(), "honest")
    liar = await _hostile(network, nodes, "liar")
    await liar.send(Heartbeat(free_slots=2, queue_depth=0, tokens_per_s=math.nan))
    await liar.wait_closed()
    await eventually(lambda: len(network.tracker.registry) == 1, what="the liar to be dropped")
    for path in ("/v1/models", "/health"):
        r = await network.client.get(path)
        assert r.status_code == 200, (path, r.status_code)
        r.json()  # valid JSON (NaN is not)
    for conn in network.tracker.registry:  # what /v1/network and the dashboard show
        json.dumps(describe_node(conn, network.completions.scheduler.reputation), allow_nan=False)
    r = await network.client.post("/v1/chat/completions", json=CHAT_BODY)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "".join(ANSWER)


@pytest.mark.parametrize("vectors", [[pack_vector([math.nan])], [b"abc"]], ids=["nan", "3-bytes"])
async def test_bad_embeddings_are_a_502_never_a_500_or_the_clients_400(
    gateway: tuple[LocalNetwork, list[HostileNode]], vectors: list[bytes]
) -> None:
    network, nodes = gateway
    models = [model_info(embeddings=True)]
    await _hostile(network, nodes, "liar", script=Script(vectors=vectors), models=models)
    r = await network.client.post("/v1/embeddings", json={"model": MODEL, "input": "hello"})
    assert_openai_error(r, 502, ErrorCode.NODE_FAILED.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_leaving_before_the_first_token_cancels_the_job(
    gateway: tuple[LocalNetwork, list[HostileNode]], stream: bool
) -> None:
    network, nodes = gateway
    staller = await _hostile(network, nodes, "staller", script=Script(stall=True))
    try:
        with pytest.raises(httpx.ReadTimeout):
            await network.client.post(
                "/v1/chat/completions", json=CHAT_BODY | {"stream": stream}, timeout=0.5
            )
        await eventually(lambda: len(staller.jobs) == 1, what="the job to reach the node")
        await eventually(lambda: staller.cancels == [staller.jobs[0].job_id], what="JobCancel")
        await eventually(
            lambda: [r.status for r in network.records] == [499], what="a 499 CANCELLED record"
        )
    finally:  # however it went, leave no job behind for the fixture's in-flight check
        await staller.close()
        registry = network.tracker.registry
        await eventually(lambda: registry.get(staller.peer_id) is None, what="it to leave")


async def test_a_client_that_stops_reading_gives_the_slot_back_and_gets_a_timeout(
    gateway: tuple[LocalNetwork, list[HostileNode]],
) -> None:
    network, _nodes = gateway
    network.completions.router.stall_timeout_s = 0.5
    engine = FakeEngine(["x" * 16384] * 600)  # 9.6 MiB: more than window and buffers hold
    await network.add_node(engine, "n1")
    async with network.client.stream(
        "POST", "/v1/chat/completions", json=CHAT_BODY | {"stream": True}
    ) as r:
        assert r.status_code == 200
        # Reading nothing: the job is cancelled on the node while the client still holds on.
        await eventually(lambda: engine.cancelled == 1, what="the job to be cancelled")
        registry = network.tracker.registry
        await eventually(
            lambda: all(c.state.inflight == 0 for c in registry), what="the slot to be free"
        )
        assert engine.finished == 0
        body = "".join([text async for text in r.aiter_text()])
    payloads = sse_payloads(body)  # ends with `data: [DONE]`
    assert payloads[-1]["error"]["code"] == ErrorCode.TIMEOUT.value
