"""Heterogeneous nodes: the scheduler shares work in proportion to measured capacity.

A small deterministic simulation (no clocks, no processes): nodes decode at a known
speed per stream for each number of busy slots, queue jobs past their slots, and
report their measured speed the way heartbeats do (an EWMA of per-request decode
speed). Closed-loop clients send a new request as soon as one finishes, and the real
:class:`~lichen.routing.scheduler.Scheduler` picks the node for each one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from lichen.routing.scheduler import Scheduler
from lichen.tracker.connection import NodeConnection
from lichen.tracker.job_stream import JobStream
from lichen.tracker.registry import Registry
from lichen.wire.messages import ChatMessage, GenerationRequest, JobChunk, SamplingParams
from node_kit import offline_node

TOKENS = 128  # per request
STEP_S = 0.01
# Tokens/s per stream with 1 and 2 busy slots, roughly SmolLM2 on 2 threads and on 1.
BIG = (100.0, 65.0)
SMALL = (40.0, 27.0)


@dataclass
class SimNode:
    conn: NodeConnection
    per_stream: tuple[float, ...]  # tokens/s per stream with 1, 2, ... busy slots
    jobs: list[float] = field(default_factory=list)  # tokens left per job, FIFO
    tokens: int = 0  # completed
    served: int = 0

    @property
    def slots(self) -> int:
        return len(self.per_stream)


def _conn(name: str, slots: int) -> NodeConnection:
    return offline_node(name, {"m": slots})


class Sim:
    def __init__(self, *speeds: tuple[float, ...]) -> None:
        self.registry = Registry()
        self.scheduler = Scheduler(self.registry)
        self.scheduler.affinity = None  # every prompt differs: only capacity matters
        self.nodes: dict[str, SimNode] = {}
        self.now = 0.0
        for i, per_stream in enumerate(speeds):
            self.add(f"n{i}", per_stream)

    def add(self, name: str, per_stream: tuple[float, ...]) -> SimNode:
        node = SimNode(_conn(name, len(per_stream)), per_stream)
        self.registry.add(node.conn)
        self.nodes[node.conn.peer_id] = node
        return node

    def submit(self) -> SimNode:
        conn = self.scheduler.candidates("m")[0]
        node = self.nodes[conn.peer_id]
        node.jobs.append(float(TOKENS))
        conn.state.inflight += 1
        conn.state.last_job = self.now
        return node

    def run(self, clients: int, seconds: float) -> float:
        """Tokens/s over ``seconds`` with ``clients`` closed-loop clients."""
        start_tokens = sum(n.tokens for n in self.nodes.values())
        for _ in range(clients):
            self.submit()
        for _ in range(round(seconds / STEP_S)):
            self.now += STEP_S
            finished = 0
            for node in self.nodes.values():
                active = min(len(node.jobs), node.slots)
                if not active:
                    continue
                speed = node.per_stream[active - 1]
                for i in range(active):
                    node.jobs[i] -= speed * STEP_S
                done = [j for j in node.jobs[:active] if j <= 0]
                for job in done:
                    node.jobs.remove(job)
                    node.tokens += TOKENS
                    node.served += 1
                    state = node.conn.state
                    state.inflight -= 1
                    old = state.tokens_per_s  # what the node's heartbeat reports
                    state.tokens_per_s = speed if old == 0 else 0.8 * old + 0.2 * speed
                finished += len(done)
            for _ in range(finished):
                self.submit()
        for node in self.nodes.values():  # the clients stop: the rest is dropped
            node.conn.state.inflight -= len(node.jobs)
            node.jobs.clear()
        total = sum(n.tokens for n in self.nodes.values()) - start_tokens
        return total / seconds


def _solo(speeds: tuple[float, ...]) -> float:
    return Sim(speeds).run(clients=len(speeds), seconds=60)


def test_a_strong_and_a_weak_node_together_reach_the_sum_of_their_solo_throughputs() -> None:
    solo = _solo(BIG) + _solo(SMALL)
    sim = Sim(BIG, SMALL)
    together = sim.run(clients=len(BIG) + len(SMALL), seconds=60)
    assert together >= 0.9 * solo
    big, small = sim.nodes.values()
    # Shares follow capacity: the 2-thread node does most of the work, the other its part.
    assert big.tokens > 1.5 * small.tokens > 0
    capacity_share = BIG[-1] * len(BIG) / (BIG[-1] * len(BIG) + SMALL[-1] * len(SMALL))
    assert abs(big.tokens / (big.tokens + small.tokens) - capacity_share) < 0.1


def test_the_weak_node_is_not_given_work_the_strong_node_finishes_sooner() -> None:
    # One request at a time: the 2-thread node answers each one sooner, so it gets them.
    sim = Sim(BIG, SMALL)
    sim.run(clients=1, seconds=30)
    big, small = sim.nodes.values()
    assert big.served > 5 * max(1, small.served)


def test_a_new_node_is_tried_at_once_and_its_share_follows_its_measured_speed() -> None:
    sim = Sim(BIG)
    sim.run(clients=3, seconds=20)  # the first node is measured and busy
    newcomer = sim.add("new", SMALL)
    assert newcomer.conn.state.tokens_per_s == 0
    # Unmeasured, the new node is the first choice (so it gets measured) ...
    assert sim.submit() is newcomer
    newcomer.jobs.clear()
    newcomer.conn.state.inflight = 0
    # ... and within a few requests it carries a share that matches its speed.
    sim.run(clients=len(BIG) + len(SMALL), seconds=20)
    assert newcomer.served >= 3
    assert newcomer.conn.state.tokens_per_s > 0
    first = next(iter(sim.nodes.values()))
    assert first.served > newcomer.served


# --- admission under overload -----------------------------------------------------------------


def test_queue_per_slot_refuses_nodes_that_are_full_and_admits_again_when_they_free() -> None:
    sim = Sim((50.0, 30.0), (50.0, 30.0))
    a, b = (n.conn for n in sim.nodes.values())
    assert sim.scheduler.queue_per_slot is None  # default: the nodes' own queues decide
    a.state.inflight = b.state.inflight = 40
    assert len(sim.scheduler.candidates("m")) == 2
    sim.scheduler.queue_per_slot = 0.5  # 2 slots + 1 waiting job per node
    a.state.inflight, b.state.inflight = 3, 2
    assert sim.scheduler.candidates("m") == [b]
    b.state.inflight = 3
    assert sim.scheduler.candidates("m") == []  # the router answers 503 + Retry-After at once
    a.state.inflight = 2
    assert sim.scheduler.candidates("m") == [a]
    sim.scheduler.queue_per_slot = 0  # only free slots
    assert sim.scheduler.candidates("m") == []


def test_under_overload_queue_per_slot_keeps_the_admitted_wait_bounded() -> None:
    # 16 closed-loop clients on 4 slots: with no tracker bound every node queues; with
    # queue_per_slot 0 the excess is refused and no admitted job waits for a slot.
    sim = Sim((50.0, 30.0), (50.0, 30.0))
    sim.scheduler.queue_per_slot = 0
    admitted = refused = 0
    for _ in range(16):
        if sim.scheduler.candidates("m"):
            sim.submit()
            admitted += 1
        else:
            refused += 1
    assert (admitted, refused) == (4, 12)
    assert all(len(n.jobs) <= n.slots for n in sim.nodes.values())


def _running(conn: NodeConnection, max_tokens: int, produced: int) -> JobStream:
    """A job the tracker sent ``conn`` that has streamed ``produced`` one-token chunks."""
    request = GenerationRequest(
        kind="chat",
        model="m",
        messages=[ChatMessage("user", "hi")],
        params=SamplingParams(max_tokens=max_tokens),
    )
    job = JobStream(conn, f"job{len(conn.jobs)}", 64, request=request)
    job.received = produced
    conn.jobs[job.job_id] = job
    conn.state.inflight += 1
    return job


def test_queue_wait_sends_a_busy_node_a_job_only_when_a_slot_frees_in_time() -> None:
    sim = Sim((50.0, 30.0))
    conn = next(iter(sim.nodes.values())).conn
    conn.state.tokens_per_s = 50.0  # 0.04 s a token per answer with both slots busy
    sim.scheduler.queue_wait_s = 0.5
    early = _running(conn, max_tokens=64, produced=10)  # 54 tokens left: 2.16 s
    assert sim.scheduler.candidates("m") == [conn]  # a free slot: no wait
    late = _running(conn, max_tokens=64, produced=20)  # 44 left: 1.76 s
    assert sim.scheduler.slot_free_in_s(conn, "m") == pytest.approx(1.76)
    assert sim.scheduler.candidates("m") == []  # both slots busy for longer than 0.5 s
    late.received = 55  # 9 tokens left: 0.36 s
    assert sim.scheduler.candidates("m") == [conn]
    _running(conn, max_tokens=64, produced=0)  # that job now waits for the slot
    # The next one would wait for the second slot to free: the early job, 2.16 s away.
    assert sim.scheduler.slot_free_in_s(conn, "m") == pytest.approx(2.16)
    assert sim.scheduler.candidates("m") == []
    early.received = 60  # 4 left: 0.16 s
    assert sim.scheduler.candidates("m") == [conn]
    # A short max_tokens is a short job, whatever the typical answer.
    assert sim.scheduler.answer_tokens > 64
    sim.scheduler.queue_per_slot = 0.5  # with both settings, both bounds apply: 3 at most
    assert sim.scheduler.candidates("m") == []


async def test_a_node_claiming_many_tokens_per_chunk_does_not_shorten_its_queue() -> None:
    # The tokens a chunk claims are the node's word (bounded only by its length, so a
    # 40-character chunk may claim 40); the scheduler counts chunks.
    sim = Sim((50.0, 30.0))
    conn = next(iter(sim.nodes.values())).conn
    conn.state.tokens_per_s = 50.0
    sim.scheduler.queue_wait_s = 0.5
    jobs = [_running(conn, max_tokens=64, produced=0) for _ in range(2)]
    for job in jobs:
        await conn._on_job_message(JobChunk(job_id=job.job_id, seq=0, text="x" * 40, tokens=40))
    assert [job.received for job in jobs] == [1, 1]
    assert sim.scheduler.slot_free_in_s(conn, "m") == pytest.approx(63 * 0.04)
    assert sim.scheduler.candidates("m") == []


# --- the typical answer length --------------------------------------------------------------


def test_the_typical_answer_length_is_learned_from_answers_and_bounded() -> None:
    sim = Sim((50.0, 30.0))
    scheduler = sim.scheduler
    conn = next(iter(sim.nodes.values())).conn
    conn.state.tokens_per_s, conn.state.inflight = 50.0, 3  # one job waits for a slot
    before = scheduler.answer_tokens
    slow_estimate = scheduler.score(conn, "m")
    request = GenerationRequest(kind="chat", model="m", messages=[ChatMessage("user", "hi")])
    for _ in range(40):
        scheduler.remember_answer(conn.peer_id, request, "word " * 6)  # ~8 tokens each
    assert scheduler.answer_tokens < before / 4
    assert scheduler.score(conn, "m") < slow_estimate / 2  # short answers: short waits
    learned = scheduler.answer_tokens
    scheduler.remember_answer(conn.peer_id, request, "")  # tool calls only: no sample
    assert scheduler.answer_tokens == learned
    for _ in range(200):
        scheduler.remember_answer(conn.peer_id, request, "x" * 10_000_000)  # hostile length
    assert scheduler.answer_tokens <= 4096


def test_an_idle_measured_node_beats_a_busy_one_that_was_not_measured_yet() -> None:
    # A node's first answer (often a slow cold one) gave it a TTFT; two others have not
    # answered yet but have a job each. The idle node must not be shunned for being known.
    sim = Sim((50.0, 30.0), (50.0, 30.0), (50.0, 30.0))
    known, busy_a, busy_b = (n.conn for n in sim.nodes.values())
    for conn in (known, busy_a, busy_b):
        conn.state.tokens_per_s = 40.0
    sim.scheduler.reputation.job_succeeded(known.peer_id, 3.0)  # a cold first answer
    busy_a.state.inflight = busy_b.state.inflight = 1
    assert sim.scheduler.candidates("m")[0] is known
    # With no node measured, nothing changes: unmeasured idle nodes score alike.
    fresh = Sim((50.0, 30.0), (50.0, 30.0))
    first, second = (n.conn for n in fresh.nodes.values())
    first.state.inflight = 1
    assert fresh.scheduler.candidates("m")[0] is second
