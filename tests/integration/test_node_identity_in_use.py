"""A newcomer's second node on one machine, and what the logs say about it.

Two processes started from one data dir share a device identity. The tracker
refuses the second link of a connected identity with ``identity_in_use`` (before
``Welcome``), the first keeps its link, and the second gives up with a message
that names the fix. A pending node is logged once by the tracker, and a node's own
shutdown is not reported as "tracker unreachable".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes import FakeEngine, eventually

from lichen.config import Settings
from lichen.errors import ErrorCode, LichenError
from lichen.identity.certs import DeviceCertificate, verify_device_certificate
from lichen.identity.invites import create_invite, parse_invite
from lichen.identity.store import Identity, load_identity, now_ms
from lichen.node import agent as agent_module
from lichen.node.agent import NodeAgent, NodeConfig
from lichen.roles.tracker import TrackerStack, tracker_stack
from lichen.storage.membership import InviteRecord
from lichen.tracker.service import _OneLinkPerIdentity

HEARTBEAT_S = 0.5


def settings_for(root: Path, mode: str) -> Settings:
    return Settings(
        data_dir=root / "tracker",
        host="127.0.0.1",
        port=0,
        network_mode="public" if mode == "public" else "private",
        heartbeat_s=HEARTBEAT_S,
        membership_poll_s=0.1,
    )


async def invite(stack: TrackerStack) -> str:
    token = create_invite(
        stack.identity.network_key,
        tracker_url=stack.local_node_url,
        roles=["node"],
        max_uses=0,
        ttl_s=3600,
        now_ms=now_ms(),
    )
    parsed = parse_invite(token)
    await stack.members.add_invite(
        InviteRecord(
            id=parsed.invite_id,
            roles=tuple(parsed.roles),
            max_uses=parsed.max_uses,
            uses=0,
            expires_ms=parsed.expires_ms,
            created_ms=parsed.issued_ms,
        )
    )
    return token


class Nodes:
    """Node agents started against one tracker stack; all stopped at the end."""

    def __init__(self, stack: TrackerStack) -> None:
        self.stack = stack
        self.running: list[tuple[NodeAgent, asyncio.Task[None]]] = []

    def start(
        self, identity: Identity, name: str, token: str
    ) -> tuple[NodeAgent, asyncio.Task[None]]:
        agent = NodeAgent(
            identity,
            FakeEngine(),
            NodeConfig(
                tracker_url=self.stack.local_node_url,
                name=name,
                invite=token,
                network_key=self.stack.identity.network_public,
                backoff_initial_s=0.05,
                backoff_max_s=0.2,
            ),
        )
        task = asyncio.create_task(agent.run(), name=f"node-{name}")
        self.running.append((agent, task))
        return agent, task

    async def close(self) -> None:
        for agent, _task in self.running:
            await agent.stop()
        await asyncio.gather(*(t for _a, t in self.running), return_exceptions=True)


@pytest.fixture
async def public(tmp_path: Path) -> AsyncIterator[tuple[TrackerStack, Nodes]]:
    settings = settings_for(tmp_path, "public")
    async with tracker_stack(settings, load_identity(tmp_path / "tracker")) as stack:
        nodes = Nodes(stack)
        try:
            yield stack, nodes
        finally:
            await nodes.close()


async def test_second_node_with_the_same_identity_is_refused_and_gives_up(
    tmp_path: Path, public: tuple[TrackerStack, Nodes]
) -> None:
    stack, nodes = public
    token = await invite(stack)
    shared_dir = tmp_path / "node"  # both "processes" were started without --data-dir
    first, _ = nodes.start(load_identity(shared_dir, node_name="first"), "first", token)
    registry = stack.tracker.registry
    await eventually(lambda: registry.get(first.identity.peer_id) is not None, what="a join")
    conn = registry.get(first.identity.peer_id)

    second, second_task = nodes.start(load_identity(shared_dir), "second", token)
    await asyncio.wait_for(second_task, 10)  # it gives up instead of reconnect-looping
    assert second.fatal is not None and second.fatal.code is ErrorCode.IDENTITY_IN_USE
    assert "--data-dir" in second.fatal.message
    assert ErrorCode.IDENTITY_IN_USE.http_status == 409
    # The first node was never kicked off: the registry still holds its very link.
    assert stack.tracker.registry.get(first.identity.peer_id) is conn
    assert first.connected.is_set() and first.fatal is None


async def test_two_nodes_started_together_end_with_one_serving(
    tmp_path: Path, public: tuple[TrackerStack, Nodes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both may pass the door before either registers: the tracker then refuses the later
    manifest, and the refused node gives up once its grace for a lingering link is over."""
    monkeypatch.setattr(agent_module, "OWN_LINK_GRACE_S", 0.5)
    stack, nodes = public
    token = await invite(stack)
    shared_dir = tmp_path / "node"
    load_identity(shared_dir, node_name="n")  # the keys exist before both start
    a, a_task = nodes.start(load_identity(shared_dir), "a", token)
    b, b_task = nodes.start(load_identity(shared_dir), "b", token)
    registry = stack.tracker.registry
    await eventually(lambda: registry.get(a.identity.peer_id) is not None, what="a join")
    serving = registry.get(a.identity.peer_id)
    done, _pending = await asyncio.wait({a_task, b_task}, timeout=15, return_when="FIRST_COMPLETED")
    (gave_up,) = done
    loser = a if gave_up is a_task else b
    winner = b if loser is a else a
    assert loser.fatal is not None and loser.fatal.code is ErrorCode.IDENTITY_IN_USE
    assert winner.fatal is None and winner.connected.is_set()
    assert registry.get(a.identity.peer_id) is serving  # never replaced, never kicked off


def test_a_refusal_soon_after_our_own_link_ended_is_retried() -> None:
    agent = NodeAgent.__new__(NodeAgent)
    agent._link_lost_at = None
    assert not agent._own_link_may_linger()  # never joined: it is another process
    agent._link_lost_at = time.monotonic()
    assert agent._own_link_may_linger()  # maybe our own link, not dropped yet
    agent._link_lost_at = time.monotonic() - agent_module.OWN_LINK_GRACE_S - 1
    assert not agent._own_link_may_linger()


async def test_a_node_with_its_own_data_dir_joins_beside_the_first(
    tmp_path: Path, public: tuple[TrackerStack, Nodes]
) -> None:
    stack, nodes = public
    token = await invite(stack)
    first, _ = nodes.start(load_identity(tmp_path / "a", node_name="a"), "a", token)
    second, _ = nodes.start(load_identity(tmp_path / "b", node_name="b"), "b", token)
    registry = stack.tracker.registry
    await eventually(lambda: len(registry) == 2, what="both to join")
    assert first.fatal is None and second.fatal is None
    assert registry.get(first.identity.peer_id) is not registry.get(second.identity.peer_id)


class _Conn:
    def __init__(self, quiet_s: float) -> None:
        self.state = SimpleNamespace(last_seen=time.monotonic() - quiet_s)


class _Registry:
    def __init__(self, conns: dict[str, _Conn]) -> None:
        self.conns = conns

    def get(self, peer_id: str) -> _Conn | None:
        return self.conns.get(peer_id)


class _Admit:
    async def admit(self, cert: DeviceCertificate, invite: str, remote: str) -> str:
        return "community"


async def test_a_quiet_link_is_taken_for_dead_and_replaced(tmp_path: Path) -> None:
    identity = load_identity(tmp_path / "n")
    cert = verify_device_certificate(identity.device_certificate, now_ms=now_ms())
    live = _Registry({identity.peer_id: _Conn(quiet_s=0.1)})
    door = _OneLinkPerIdentity(_Admit(), live, stale_after_s=2.0)  # type: ignore[arg-type]
    with pytest.raises(LichenError) as refused:
        await door.admit(cert, "", "127.0.0.1:1")
    assert refused.value.code is ErrorCode.IDENTITY_IN_USE
    # No heartbeat for longer than the tracker waits: most likely this node, restarted.
    stale = _Registry({identity.peer_id: _Conn(quiet_s=30.0)})
    door = _OneLinkPerIdentity(_Admit(), stale, stale_after_s=2.0)  # type: ignore[arg-type]
    assert await door.admit(cert, "", "127.0.0.1:1") == "community"
    empty = _OneLinkPerIdentity(_Admit(), _Registry({}), stale_after_s=2.0)  # type: ignore[arg-type]
    assert await empty.admit(cert, "", "127.0.0.1:1") == "community"


async def test_clean_shutdown_is_not_reported_as_tracker_unreachable(
    tmp_path: Path, public: tuple[TrackerStack, Nodes], caplog: pytest.LogCaptureFixture
) -> None:
    stack, nodes = public
    agent, task = nodes.start(
        load_identity(tmp_path / "n", node_name="n"), "n", await invite(stack)
    )
    registry = stack.tracker.registry
    await eventually(lambda: registry.get(agent.identity.peer_id) is not None, what="a join")
    caplog.set_level(logging.INFO, logger="lichen.node.agent")
    await agent.stop()
    await asyncio.wait_for(task, 10)
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert agent.fatal is None


async def test_a_pending_node_is_logged_once_by_the_tracker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_module, "PENDING_RETRY_S", 0.05)
    caplog.set_level(logging.DEBUG, logger="lichen")
    settings = settings_for(tmp_path, "private")
    async with tracker_stack(settings, load_identity(tmp_path / "tracker")) as stack:
        nodes = Nodes(stack)
        try:
            token = await invite(stack)
            nodes.start(load_identity(tmp_path / "n", node_name="n"), "n", token)

            def refusals() -> int:
                return sum("membership_pending" in r.getMessage() for r in caplog.records)

            await eventually(lambda: refusals() >= 3, what="several pending refusals")
        finally:
            await nodes.close()
    tracker_warnings = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and r.name.startswith(("lichen.tracker", "lichen.transport"))
        and "waiting for approval" in r.getMessage()
    ]
    assert len(tracker_warnings) == 1, [r.getMessage() for r in tracker_warnings]
    node_warnings = [
        r for r in caplog.records if r.name == "lichen.node.agent" and r.levelno >= logging.WARNING
    ]
    assert len(node_warnings) == 1 and "lichen network approve" in node_warnings[0].getMessage()
