"""Gateways with no node links serve through trackers over a real NATS server (issue 12)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cluster_kit import Cluster
from fakes import FakeEngine, eventually, sse_payloads, streamed_text

from lichen.cluster.bus import Bus
from lichen.cluster.messages import FromNode, NodeUp, ToNode
from lichen.wire import codec
from lichen.wire.messages import ChatMessage, GenerationRequest, Heartbeat, JobError, JobStart

pytestmark = pytest.mark.asyncio

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 32}


@pytest.fixture
async def cluster(tmp_path: Path, nats_server: str) -> AsyncIterator[Cluster]:
    net = Cluster(tmp_path, nats_server)
    try:
        yield net
    finally:
        await net.close()


async def test_a_gateway_serves_through_a_tracker_it_has_no_link_to(cluster: Cluster) -> None:
    tracker = await cluster.add_tracker("t1")
    node = await cluster.add_node(tracker, FakeEngine(), "n1")
    gateway = await cluster.add_gateway()
    await cluster.sees(gateway, node)

    answer = await gateway.client.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["choices"][0]["message"]["content"] == "Hello, this is a scripted answer."
    assert body["usage"]["completion_tokens"] == 8

    streamed = await gateway.client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert streamed.status_code == 200
    assert streamed_text(sse_payloads(streamed.text)) == "Hello, this is a scripted answer."
    assert node.engine.finished == 2
    assert tracker.relay.open_jobs == 0  # every relayed job ended on the tracker too


async def test_two_gateways_reach_nodes_on_two_trackers(cluster: Cluster) -> None:
    t1 = await cluster.add_tracker("t1")
    t2 = await cluster.add_tracker("t2")
    n1 = await cluster.add_node(t1, FakeEngine(), "n1")
    n2 = await cluster.add_node(t2, FakeEngine(), "n2")
    g1 = await cluster.add_gateway()
    g2 = await cluster.add_gateway()
    await cluster.sees(g1, n1, n2)
    await cluster.sees(g2, n1, n2)
    for gateway in (g1, g2):
        answer = await gateway.client.post("/v1/chat/completions", json=CHAT)
        assert answer.status_code == 200, answer.text
    assert n1.engine.finished + n2.engine.finished == 2
    # Take away a node that served: the next answers must come through the other tracker.
    gone, other = (n1, n2) if n1.engine.finished else (n2, n1)
    before = other.engine.finished
    await gone.agent.stop()
    for gateway in (g1, g2):
        await eventually(
            lambda g=gateway: g.directory.registry.get(gone.peer_id) is None,
            what="the node to leave",
        )
        answer = await gateway.client.post("/v1/chat/completions", json=CHAT)
        assert answer.status_code == 200, answer.text
    assert other.engine.finished == before + 2  # one answer from each gateway


async def test_a_node_that_leaves_its_tracker_leaves_every_gateway(cluster: Cluster) -> None:
    tracker = await cluster.add_tracker("t1")
    node = await cluster.add_node(tracker, FakeEngine(), "n1")
    gateway = await cluster.add_gateway()
    await cluster.sees(gateway, node)
    await node.agent.stop()
    await eventually(
        lambda: gateway.directory.registry.get(node.peer_id) is None, what="the node to go"
    )


async def test_a_stream_survives_its_tracker_dying(cluster: Cluster) -> None:
    """kill -9 of the tracker serving a stream: the gateway notices the missing beats and the
    router resumes on a node of the other tracker; the client sees one unbroken answer."""
    t1 = await cluster.add_tracker("t1")
    t2 = await cluster.add_tracker("t2")
    slow = FakeEngine(delay_s=0.05, fail_after=3, failure="stall")
    n1 = await cluster.add_node(t1, slow, "n1")
    gateway = await cluster.add_gateway()
    await cluster.sees(gateway, n1)

    async def kill_t1_when_stalled() -> None:
        await slow.stalled.wait()
        n2 = await cluster.add_node(t2, FakeEngine(), "n2")
        await cluster.sees(gateway, n2)
        await t1.stop(abrupt=True)  # no NodeDown: only the beats stop

    killer = asyncio.create_task(kill_t1_when_stalled())
    streamed = await gateway.client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    await killer
    assert streamed.status_code == 200
    payloads = sse_payloads(streamed.text)
    assert streamed_text(payloads) == "Hello, this is a scripted answer."
    usage = [p["usage"] for p in payloads if p.get("usage")]
    assert not usage or usage[-1]["completion_tokens"] == 8


async def test_a_dead_gateways_jobs_are_cancelled_on_the_node(cluster: Cluster) -> None:
    tracker = await cluster.add_tracker("t1")
    stalled = FakeEngine(fail_after=2, failure="stall")
    node = await cluster.add_node(tracker, stalled, "n1")
    gateway = await cluster.add_gateway()
    await cluster.sees(gateway, node)
    request = asyncio.create_task(gateway.client.post("/v1/chat/completions", json=CHAT))
    await stalled.stalled.wait()
    assert tracker.relay.open_jobs == 1
    await gateway.directory.stop()  # the gateway stops beating, as if it died
    await gateway.bus.close()
    await eventually(lambda: tracker.relay.open_jobs == 0, what="the orphaned job to go")
    await eventually(lambda: stalled.cancelled == 1, what="the node to stop generating")
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)


# --- hostile traffic on the bus --------------------------------------------------------------


async def test_malformed_and_forged_bus_messages_change_nothing(cluster: Cluster) -> None:
    tracker = await cluster.add_tracker("t1")
    node = await cluster.add_node(tracker, FakeEngine(), "n1")
    gateway = await cluster.add_gateway()
    await cluster.sees(gateway, node)
    rogue = await Bus.connect(cluster.nats_url, name="rogue")
    try:
        subjects = cluster.subjects
        await rogue.client.publish(subjects.directory, b"\xc1 not msgpack")
        await rogue.client.publish(subjects.tracker(tracker.relay.tracker_id), b"\x00" * 64)
        # A node announcement with a certificate that does not verify.
        await rogue.publish(
            subjects.directory,
            NodeUp(
                tracker="rogue",
                peer_id="f" * 64,
                certificate=b"forged",
                trust="member",
                manifest=b"",
            ),
        )
        # A frame a gateway may not send to a node (a heartbeat), and one for a peer that
        # is not connected: the first is dropped, the second answered with a job error.
        await rogue.publish(
            subjects.tracker(tracker.relay.tracker_id),
            ToNode(gateway="rogue", peer_id=node.peer_id, frame=codec.encode(Heartbeat(0, 0, 0.0))),
        )
        errors: list[FromNode] = []

        async def collect(msg: object) -> None:
            if isinstance(msg, FromNode):
                errors.append(msg)

        await rogue.subscribe(subjects.gateway("rogue"), collect)
        start = JobStart(
            job_id="j" * 32,
            request=GenerationRequest(
                kind="chat", model="fake-model", messages=[ChatMessage(role="user", content="x")]
            ),
            deadline_ms=0,
            window=8,
        )
        await rogue.publish(
            subjects.tracker(tracker.relay.tracker_id),
            ToNode(gateway="rogue", peer_id="a" * 64, frame=codec.encode(start)),
        )
        await eventually(lambda: len(errors) == 1, what="the refusal")
        refusal = codec.decode(errors[0].frame)
        assert isinstance(refusal, JobError) and refusal.code == "node_failed"
        await rogue.flush()
    finally:
        await rogue.close()
    assert gateway.directory.registry.get("f" * 64) is None
    answer = await gateway.client.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 200  # the network still serves


# --- the gateway role refuses to start half-configured ------------------------------------


async def test_a_gateway_without_a_database_or_bus_says_which_setting(
    tmp_path: Path, nats_server: str
) -> None:
    from lichen.config import Settings
    from lichen.errors import LichenError
    from lichen.identity.store import load_identity
    from lichen.roles.cluster import gateway_stack

    identity = load_identity(tmp_path / "keys")
    bare = Settings(data_dir=tmp_path / "data", port=0)
    with pytest.raises(LichenError, match="LICHEN_DATABASE_URL"):
        async with gateway_stack(bare, identity):
            pass
    no_bus = Settings(
        data_dir=tmp_path / "data",
        port=0,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}",
    )
    with pytest.raises(LichenError, match="LICHEN_NATS_URL"):
        async with gateway_stack(no_bus, identity):
            pass
    closed = no_bus.model_copy(update={"nats_url": "nats://127.0.0.1:9"})  # nothing listens
    with pytest.raises(LichenError, match="cannot reach the message bus"):
        async with gateway_stack(closed, identity):
            pass


async def test_a_gateway_process_serves_through_the_bus(tmp_path: Path, nats_server: str) -> None:
    """``gateway_stack`` (what ``lichen gateway`` runs) over a tracker on the same bus."""
    import shutil

    import httpx

    from lichen.config import Settings
    from lichen.identity.store import load_identity
    from lichen.roles.cluster import gateway_stack
    from lichen.roles.tracker import tracker_stack

    shared = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    common = {"database_url": shared, "nats_url": nats_server, "cluster_beat_s": 0.2, "port": 0}
    owner = load_identity(tmp_path / "tracker")
    shutil.copytree(tmp_path / "tracker" / "keys", tmp_path / "gateway" / "keys")
    gateway_identity = load_identity(tmp_path / "gateway")
    assert gateway_identity.network_public == owner.network_public
    tracker_settings = Settings(data_dir=tmp_path / "tracker", **common)
    gateway_settings = Settings(data_dir=tmp_path / "gateway", **common)
    async with tracker_stack(tracker_settings, owner, gateway=False) as tracker:
        from fakes import start_owned_node

        node = start_owned_node(
            tmp_path / "n1",
            owner_dir=tmp_path / "tracker",
            port=tracker.port,
            network_public=owner.network_public,
            engine=FakeEngine(),
            name="n1",
        )
        try:
            async with gateway_stack(gateway_settings, gateway_identity) as gateway:
                await eventually(lambda: len(gateway.directory.registry) == 1, what="the node")
                async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
                    answer = await client.post("/v1/chat/completions", json=CHAT)
                    health = await client.get("/health")
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"]
            assert health.json()["nodes"] == 1
        finally:
            await node.agent.stop()
            await asyncio.gather(node.task, return_exceptions=True)
