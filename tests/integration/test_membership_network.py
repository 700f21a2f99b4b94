"""The tracker role over the real wire: joining by invite, approval, revocation,
dead nodes, tracker restarts, refused identities and model routing.

The tracker is the real ``tracker_stack`` (database, admission, gateway, revocation
watcher) on a loopback port; nodes are real ``NodeAgent`` instances with scripted
engines, each with its own identity (its own account key, so invites matter).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from fakes import FakeEngine, eventually
from websockets.asyncio.client import connect

from lichen.config import Settings
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.completions import NODE_HEADER
from lichen.http.operator import operator_headers
from lichen.identity.certs import issue_device_certificate
from lichen.identity.invites import create_invite, parse_invite
from lichen.identity.signing import generate_key, public_raw
from lichen.identity.store import Identity, load_identity, now_ms
from lichen.node.agent import NodeAgent, NodeConfig
from lichen.roles.tracker import TrackerStack, tracker_stack
from lichen.storage.membership import InviteRecord
from lichen.transport.handshake import client_handshake
from lichen.transport.link import ClientLink
from lichen.wire.manifest import sign_manifest
from lichen.wire.messages import Error, Hardware, Manifest, ManifestBody, ModelInfo

HEARTBEAT_S = 0.5


def settings_for(root: Path, mode: str = "public", port: int = 0) -> Settings:
    return Settings(
        data_dir=root / "tracker",
        host="127.0.0.1",
        port=port,
        network_mode="public" if mode == "public" else "private",
        heartbeat_s=HEARTBEAT_S,
        membership_poll_s=0.1,
    )


class Net:
    """A running tracker stack plus nodes joining it with invites."""

    def __init__(self, root: Path, stack: TrackerStack) -> None:
        self.root = root
        self.stack = stack
        self.agents: list[tuple[NodeAgent, asyncio.Task[None]]] = []
        self.client = httpx.AsyncClient(
            base_url=stack.url,
            timeout=30.0,
            trust_env=False,
            headers=operator_headers(stack.settings.data_dir),  # /v1/network on public networks
        )

    @property
    def registry(self) -> Any:
        return self.stack.tracker.registry

    async def invite(self, max_uses: int = 1) -> str:
        token = create_invite(
            self.stack.identity.network_key,
            tracker_url=self.stack.local_node_url,
            roles=["node"],
            max_uses=max_uses,
            ttl_s=3600,
            now_ms=now_ms(),
        )
        invite = parse_invite(token)
        await self.stack.members.add_invite(InviteRecord.of(invite))
        return token

    def identity(self, name: str) -> Identity:
        return load_identity(self.root / name, node_name=name)

    def start_node(self, name: str, engine: FakeEngine, invite: str = "") -> NodeAgent:
        agent = NodeAgent(
            self.identity(name),
            engine,
            NodeConfig(
                tracker_url=self.stack.local_node_url,
                name=name,
                invite=invite,
                network_key=self.stack.identity.network_public,
                backoff_initial_s=0.05,
                backoff_max_s=0.3,
            ),
        )
        self.agents.append((agent, asyncio.create_task(agent.run(), name=f"node-{name}")))
        return agent

    async def joined(self, agent: NodeAgent) -> None:
        await eventually(
            lambda: self.registry.get(agent.identity.peer_id) is not None,
            what=f"{agent.config.name} to join",
        )

    async def close(self) -> None:
        await self.client.aclose()
        for agent, _task in self.agents:
            await agent.stop()
        await asyncio.gather(*(t for _a, t in self.agents), return_exceptions=True)


@pytest.fixture
async def invite_net(tmp_path: Path) -> AsyncIterator[Net]:
    async with tracker_stack(settings_for(tmp_path), load_identity(tmp_path / "tracker")) as s:
        network = Net(tmp_path, s)
        try:
            yield network
        finally:
            await network.close()


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]} | extra


# --- joining ------------------------------------------------------------------------------


async def test_invited_node_joins_and_is_listed_without_content(invite_net: Net) -> None:
    engine = FakeEngine(model="alpha")
    agent = invite_net.start_node("n1", engine, await invite_net.invite())
    await invite_net.joined(agent)
    r = await invite_net.client.post("/v1/chat/completions", json=chat("alpha"))
    assert r.status_code == 200, r.text
    assert r.headers[NODE_HEADER] == agent.identity.peer_id
    view = (await invite_net.client.get("/v1/network")).json()
    assert view["nodes_total"] == 1 and view["models"] == {"alpha": 1}
    (node,) = view["nodes"]
    assert (node["name"], node["peer_id"], node["state"]) == ("n1", agent.identity.peer_id, "ready")
    assert node["hardware"]["cores"] >= 1 and node["models"][0]["name"] == "alpha"
    assert node["served"] == 1 and node["ttft_ms"] is not None
    assert "Hello" not in str(view)  # no completion text in the live view
    member = await invite_net.stack.members.member(agent.identity.peer_id)
    assert member is not None and member.status == "approved"


async def test_private_network_holds_invited_nodes_until_approved(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, mode="private")
    async with tracker_stack(settings, load_identity(tmp_path / "tracker")) as stack:
        invite_net = Net(tmp_path, stack)
        try:
            agent = invite_net.start_node("n1", FakeEngine(), await invite_net.invite())
            await eventually(lambda: agent.pending, what="the node to be held pending")
            assert len(stack.tracker.registry) == 0 and agent.fatal is None
            await stack.members.set_status(agent.identity.peer_id, "approved", now_ms=now_ms())
            await invite_net.joined(agent)
            assert not agent.pending
        finally:
            await invite_net.close()


async def test_node_without_invite_on_private_network_gives_up(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, mode="private")
    async with tracker_stack(settings, load_identity(tmp_path / "tracker")) as stack:
        invite_net = Net(tmp_path, stack)
        try:
            agent = invite_net.start_node("stranger", FakeEngine())
            await eventually(lambda: agent.fatal is not None, what="the refusal")
            assert agent.fatal is not None and agent.fatal.code is ErrorCode.IDENTITY_UNKNOWN
        finally:
            await invite_net.close()


async def test_revoking_a_connected_node_disconnects_it_at_once(invite_net: Net) -> None:
    # An answer that would run for hours: the node can only leave it by being dropped.
    engine = FakeEngine(delay_s=0.05, tokens=[f" t{i}" for i in range(200_000)])
    agent = invite_net.start_node("n1", engine, await invite_net.invite())
    await invite_net.joined(agent)
    async with invite_net.client.stream(
        "POST", "/v1/chat/completions", json=chat("fake-model", stream=True)
    ) as r:
        assert r.status_code == 200
        await eventually(lambda: engine.produced > 2, what="tokens to flow")
        await invite_net.stack.members.set_status(
            agent.identity.peer_id, "revoked", now_ms=now_ms()
        )
        await eventually(lambda: agent.fatal is not None, what="the node to be dropped")
        assert engine.finished == 0  # dropped in the middle of its answer
        body = await r.aread()
    assert agent.fatal is not None and agent.fatal.code is ErrorCode.IDENTITY_REVOKED
    assert invite_net.registry.get(agent.identity.peer_id) is None
    assert b"node_failed" in body  # nowhere to resume: the stream ends with a typed error
    await eventually(lambda: engine.active == 0, what="the node to stop generating")


# --- liveness -----------------------------------------------------------------------------


async def _raw_join(invite_net: Net, name: str, *, tamper: bool = False) -> tuple[Any, ClientLink]:
    """Handshake and send a manifest by hand; returns the open connection."""
    identity = invite_net.identity(name)
    conn = await connect(invite_net.stack.local_node_url, proxy=None)
    link = ClientLink(conn)
    await client_handshake(
        link,
        device_key=identity.device_key,
        device_certificate=identity.device_certificate,
        expected_network_key=invite_net.stack.identity.network_public,
        invite=await invite_net.invite(),
    )
    manifest = sign_manifest(
        identity.device_key,
        name=name,
        peer_id=identity.peer_id,
        models=[ModelInfo(name="m", sha256="0" * 64, engine="fake")],
        engines=["fake"],
    )
    if tamper:
        body = msgspec.msgpack.decode(manifest.body, type=ManifestBody)
        forged = msgspec.structs.replace(body, hardware=Hardware(cpu="EPYC", cores=256))
        manifest = Manifest(body=msgspec.msgpack.encode(forged), signature=manifest.signature)
    await link.send(manifest)
    return conn, link


async def test_a_silent_node_leaves_the_schedule(invite_net: Net) -> None:
    conn, _link = await _raw_join(invite_net, "mute")
    try:
        await eventually(lambda: len(invite_net.registry) == 1, what="the node to register")
        # It never sends a heartbeat and never closes its socket: only the watchdog (a
        # node silent for 1.5 heartbeats, HEARTBEAT_S here) can remove it.
        await eventually(lambda: len(invite_net.registry) == 0, timeout=60.0, what="the watchdog")
        r = await invite_net.client.post("/v1/chat/completions", json=chat("m"))
        assert r.status_code == 404  # nobody serves it any more
    finally:
        await conn.close()


async def test_tampered_manifest_is_refused_with_a_typed_error(invite_net: Net) -> None:
    conn, link = await _raw_join(invite_net, "liar", tamper=True)
    try:
        reply = await asyncio.wait_for(link.recv(), 5)
        assert isinstance(reply, Error) and reply.code == ErrorCode.MANIFEST_INVALID.value
        assert len(invite_net.registry) == 0
    finally:
        await conn.close()


async def test_forged_certificate_is_refused_before_any_job(invite_net: Net) -> None:
    identity = invite_net.identity("forger")
    cert = issue_device_certificate(
        generate_key(), public_raw(generate_key()), name="forger", now_ms=now_ms()
    )  # certifies a different device key than the one that signs the handshake
    async with connect(invite_net.stack.local_node_url, proxy=None) as conn:
        with pytest.raises(LichenError) as info:
            await client_handshake(
                ClientLink(conn),
                device_key=identity.device_key,
                device_certificate=cert,
                expected_network_key=invite_net.stack.identity.network_public,
                invite=await invite_net.invite(),
            )
    assert info.value.code is ErrorCode.HANDSHAKE_FAILED
    assert await invite_net.stack.members.members() == []


async def test_tracker_restart_does_not_need_a_node_restart(tmp_path: Path) -> None:
    identity = load_identity(tmp_path / "tracker")
    first = tracker_stack(settings_for(tmp_path), identity)
    stack = await first.__aenter__()
    invite_net = Net(tmp_path, stack)
    try:
        agent = invite_net.start_node("n1", FakeEngine(), await invite_net.invite())
        await invite_net.joined(agent)
        await first.__aexit__(None, None, None)  # the tracker goes away; the node retries
        await eventually(lambda: not agent.connected.is_set(), what="the node to notice")
        async with tracker_stack(settings_for(tmp_path, port=stack.port), identity) as second:
            await eventually(
                lambda: second.tracker.registry.get(agent.identity.peer_id) is not None,
                timeout=10,
                what="the node to rejoin the restarted tracker",
            )
            assert agent.fatal is None
            async with httpx.AsyncClient(base_url=second.url, trust_env=False) as client:
                r = await client.post("/v1/chat/completions", json=chat("fake-model"))
            assert r.status_code == 200 and r.headers[NODE_HEADER] == agent.identity.peer_id
    finally:
        await invite_net.close()


# --- scheduling ---------------------------------------------------------------------------


async def test_models_route_to_the_nodes_that_serve_them_and_load_spreads(invite_net: Net) -> None:
    token = await invite_net.invite(max_uses=4)
    alpha = [
        invite_net.start_node(f"a{i}", FakeEngine(model="alpha", delay_s=0.02), token)
        for i in (1, 2)
    ]
    beta = invite_net.start_node("b1", FakeEngine(model="beta"), token)
    for agent in [*alpha, beta]:
        await invite_net.joined(agent)
    models = (await invite_net.client.get("/v1/models")).json()["data"]
    assert {m["id"]: m["nodes"] for m in models} == {"alpha": 2, "beta": 1}
    r = await invite_net.client.post("/v1/chat/completions", json=chat("beta"))
    assert r.headers[NODE_HEADER] == beta.identity.peer_id
    replies = await asyncio.gather(
        *(invite_net.client.post("/v1/chat/completions", json=chat("alpha")) for _ in range(6))
    )
    served = {r.headers[NODE_HEADER] for r in replies}
    assert served == {a.identity.peer_id for a in alpha}  # both alpha nodes, never beta
    auto = await invite_net.client.post("/v1/chat/completions", json=chat("auto"))
    assert auto.json()["model"] == "alpha"  # the model most nodes serve
