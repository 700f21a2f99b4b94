"""The gateway role's builder over a plain node registry (no tracker service behind it).

A node here is a :class:`NodeConnection` over a scripted link that answers each job
with fixed chunks: what a gateway process sees of a node held by another process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client import CollectorRegistry

from lichen.config import Settings
from lichen.roles.gateway import Gateway, GatewayOptions, build_gateway
from lichen.storage.repositories import RequestRecord
from lichen.tasks import cancel_and_wait
from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry
from lichen.transport.link import LinkClosed
from lichen.wire.messages import JobChunk, JobEnd, JobStart, Message, Usage
from node_kit import offline_node

MODEL = "smollm2-135m"
TOKENS = ["Hel", "lo", "!"]
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


class ScriptedLink:
    """A node's link that answers every job with :data:`TOKENS`, then ends it."""

    remote = "scripted"

    def __init__(self) -> None:
        self.jobs: list[JobStart] = []
        self._inbox: asyncio.Queue[Message | None] = asyncio.Queue()

    async def send(self, msg: Message) -> None:
        if isinstance(msg, JobStart):
            self.jobs.append(msg)
            for seq, text in enumerate(TOKENS):
                self._inbox.put_nowait(JobChunk(job_id=msg.job_id, seq=seq, text=text))
            usage = Usage(prompt_tokens=3, completion_tokens=len(TOKENS))
            self._inbox.put_nowait(JobEnd(job_id=msg.job_id, finish_reason="stop", usage=usage))

    async def recv(self) -> Message:
        msg = await self._inbox.get()
        if msg is None:
            raise LinkClosed("closed")
        return msg

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._inbox.put_nowait(None)


@dataclass
class Node:
    conn: NodeConnection
    link: ScriptedLink


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    shape = offline_node("scripted", {MODEL: 2})
    link = ScriptedLink()
    conn = NodeConnection(link, shape.peer, shape.state.manifest)
    serving = asyncio.create_task(conn.serve(), name="scripted-node")
    try:
        yield Node(conn, link)
    finally:
        await link.close()
        await cancel_and_wait(serving)


def _registry(node: Node) -> Registry:
    registry = Registry()  # a plain registry: no TrackerService anywhere
    registry.add(node.conn)
    return registry


def _client(gateway: Gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw")


async def test_a_gateway_over_a_plain_registry_answers_a_chat_completion(node: Node) -> None:
    records: list[RequestRecord] = []

    async def record(entry: RequestRecord) -> None:
        records.append(entry)

    metrics = CollectorRegistry()
    gateway = build_gateway(
        GatewayOptions(), registry=_registry(node), record=record, metrics=metrics
    )
    async with _client(gateway) as client:
        answer = await client.post("/v1/chat/completions", json=CHAT)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == "".join(TOKENS)
        assert answer.json()["usage"]["completion_tokens"] == len(TOKENS)
        models = (await client.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == [MODEL]
        assert (await client.get("/metrics")).status_code == 200  # metrics handed in
    assert [job.request.model for job in node.link.jobs] == [MODEL]
    assert gateway.completions.scheduler is gateway.scheduler
    assert gateway.scheduler.registry.get(node.conn.peer_id) is node.conn


async def test_blocked_nodes_get_no_jobs_and_the_client_a_typed_503(node: Node) -> None:
    gateway = build_gateway(
        GatewayOptions(), registry=_registry(node), blocked=lambda peer_id: True
    )
    async with _client(gateway) as client:
        refused = await client.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "no_capacity"
    assert node.link.jobs == []  # the node never saw it


async def test_no_metrics_registry_means_no_metrics_route(node: Node) -> None:
    gateway = build_gateway(GatewayOptions(), registry=_registry(node))
    assert gateway.metrics is None
    async with _client(gateway) as client:
        assert (await client.get("/metrics")).status_code == 404


async def test_catalog_aliases_follow_the_options(node: Node) -> None:
    plain = build_gateway(GatewayOptions(), registry=_registry(node))
    named = build_gateway(GatewayOptions(catalog_aliases=True), registry=_registry(node))
    async with _client(plain) as client:
        missing = await client.post("/v1/chat/completions", json=CHAT | {"model": "smollm2"})
        assert missing.status_code == 404, missing.text
    async with _client(named) as client:
        found = await client.post("/v1/chat/completions", json=CHAT | {"model": "smollm2"})
        assert found.status_code == 200, found.text


def test_options_from_settings_carry_the_scheduling_knobs() -> None:
    settings = Settings(
        affinity=False, queue_per_slot=0.5, queue_wait_s=0.25, max_request_bytes=12345
    )
    options = GatewayOptions.from_settings(settings)
    assert options.max_request_bytes == 12345 and options.catalog_aliases
    assert options.limits is not None and options.hosts is not None
    gateway = build_gateway(options, registry=Registry())
    assert gateway.scheduler.affinity is None
    assert gateway.scheduler.queue_per_slot == 0.5 and gateway.scheduler.queue_wait_s == 0.25
    assert gateway.scheduler.alias_of is not None
    default = build_gateway(GatewayOptions(), registry=Registry()).scheduler
    assert default.affinity is not None and default.queue_per_slot is None
    assert default.queue_wait_s is None
    assert default.alias_of is None and default.blocked is None and default.trust_for is None


async def test_health_consults_the_checks_handed_in(node: Node) -> None:
    problem: list[str | None] = [None]
    gateway = build_gateway(
        GatewayOptions(), registry=_registry(node), health_checks=[lambda: problem[0]]
    )
    async with _client(gateway) as client:
        assert (await client.get("/health")).json()["status"] == "ok"
        problem[0] = "engine_stalled"
        stalled = await client.get("/health")
    assert stalled.status_code == 503 and stalled.json()["status"] == "engine_stalled"
