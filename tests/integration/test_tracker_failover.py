"""A node whose tracker dies moves to another tracker of the network at once.

Two real tracker stacks (``tracker_stack``: database, admission, gateway) share one
membership database (SQLite file, then PostgreSQL) and one network key; a real
``NodeAgent`` joins the first with an invite naming both. The node's backoff is
far longer than any wait here, so reaching the second tracker in time shows it went
there without backing off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fakes import FakeEngine, eventually

from lichen.clock import now_ms
from lichen.config import Settings
from lichen.gateway.completions import NODE_HEADER
from lichen.identity.invites import create_invite, parse_invite
from lichen.identity.store import KEYS_DIR, load_identity
from lichen.node.agent import NodeAgent, NodeConfig
from lichen.node.join import resolve_join
from lichen.roles.tracker import TrackerStack, tracker_stack
from lichen.storage.membership import InviteRecord
from lichen.tracker.service import NODE_PATH
from ports import free_port

BACKOFF_S = 60.0  # a node that backed off (48 s at least) would miss every deadline below
WAIT_S = 15.0  # generous for a loaded machine, far below the backoff


def _settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        host="127.0.0.1",
        port=0,
        network_mode="public",
        heartbeat_s=0.5,
        membership_poll_s=0.1,
    )


async def _invite(stack: TrackerStack, urls: list[str]) -> str:
    token = create_invite(
        stack.identity.network_key,
        tracker_url=urls[0],
        other_tracker_urls=urls[1:],
        roles=["node"],
        max_uses=1,  # a second use would be refused: the second tracker must know the member
        ttl_s=3600,
        now_ms=now_ms(),
    )
    invite = parse_invite(token)
    await stack.members.add_invite(InviteRecord.of(invite))
    return token


@contextlib.asynccontextmanager
async def _node(root: Path, token: str) -> AsyncIterator[NodeAgent]:
    """A node joined the way ``lichen node --join`` joins: through its join.json."""
    target = resolve_join(root / "node", token)
    agent = NodeAgent(
        load_identity(root / "node", node_name="n1"),
        FakeEngine(),
        NodeConfig(
            tracker_url=target.tracker_url,
            other_tracker_urls=target.other_tracker_urls,
            name="n1",
            invite=target.invite,
            network_key=target.network_key,
            backoff_initial_s=BACKOFF_S,
            backoff_max_s=BACKOFF_S,
        ),
    )
    task = asyncio.create_task(agent.run(), name="node-n1")
    try:
        yield agent
    finally:
        await agent.stop()
        await asyncio.gather(task, return_exceptions=True)


def _listed(stack: TrackerStack, agent: NodeAgent) -> bool:
    return stack.tracker.registry.get(agent.identity.peer_id) is not None


async def test_a_node_whose_tracker_dies_rejoins_another_tracker(
    tmp_path: Path, lichen_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lichen.node.agent")
    identity = load_identity(tmp_path / "t1")
    shutil.copytree(tmp_path / "t1" / KEYS_DIR, tmp_path / "t2" / KEYS_DIR)  # one network key
    first = tracker_stack(_settings(tmp_path / "t1", lichen_db_url), identity)
    one = await first.__aenter__()
    first_open = True
    try:
        async with tracker_stack(
            _settings(tmp_path / "t2", lichen_db_url), load_identity(tmp_path / "t2")
        ) as two:
            assert two.identity.network_public == one.identity.network_public
            token = await _invite(one, [one.local_node_url, two.local_node_url])
            async with _node(tmp_path, token) as agent:
                await eventually(
                    lambda: _listed(one, agent), timeout=WAIT_S, what="the node on tracker 1"
                )
                assert agent.joined_url == one.local_node_url and not _listed(two, agent)

                first_open = False
                await first.__aexit__(None, None, None)  # tracker 1 dies
                await eventually(
                    lambda: _listed(two, agent), timeout=WAIT_S, what="the node on tracker 2"
                )
                assert agent.fatal is None and agent.joined_url == two.local_node_url
                async with httpx.AsyncClient(base_url=two.url, trust_env=False) as client:
                    r = await client.post(
                        "/v1/chat/completions",
                        json={
                            "model": "fake-model",
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                    )
                assert r.status_code == 200, r.text
                assert r.headers[NODE_HEADER] == agent.identity.peer_id
                member = await two.members.member(agent.identity.peer_id)
                assert member is not None and member.status == "approved"
    finally:
        if first_open:
            await first.__aexit__(None, None, None)
    logged = [r.getMessage() for r in caplog.records]
    joined = [m for m in logged if m.startswith("joined")]
    assert joined[0].startswith(f"joined tracker {one.local_node_url} ")
    assert joined[-1].startswith(f"joined tracker {two.local_node_url} ")
    assert any(
        m.startswith(f"link to tracker lost ({one.local_node_url}, ")
        and m.endswith(f"; trying tracker {two.local_node_url}")
        for m in logged
    )


async def test_a_node_skips_an_unreachable_tracker_without_backing_off(
    tmp_path: Path, lichen_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lichen.node.agent")
    dead = f"ws://127.0.0.1:{free_port()}{NODE_PATH}"  # nothing listens there
    async with tracker_stack(
        _settings(tmp_path / "t1", lichen_db_url), load_identity(tmp_path / "t1")
    ) as live:
        token = await _invite(live, [dead, live.local_node_url])
        async with _node(tmp_path, token) as agent:
            await eventually(
                lambda: _listed(live, agent), timeout=WAIT_S, what="the node on the live tracker"
            )
            assert agent.joined_url == live.local_node_url and agent.fatal is None
    assert any(
        m.startswith(f"tracker unreachable ({dead}, ")
        and m.endswith(f"; trying tracker {live.local_node_url}")
        for m in (r.getMessage() for r in caplog.records)
    )


async def test_stopping_a_node_ends_its_backoff_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lichen.node.agent")
    dead = f"ws://127.0.0.1:{free_port()}{NODE_PATH}"
    agent = NodeAgent(
        load_identity(tmp_path / "node", node_name="n1"),
        FakeEngine(),
        NodeConfig(tracker_url=dead, name="n1", backoff_initial_s=BACKOFF_S),
    )
    task = asyncio.create_task(agent.run(), name="node-n1")
    try:
        await eventually(
            lambda: any("retrying in" in r.getMessage() for r in caplog.records),
            what="the node to back off",
        )
    finally:
        await agent.stop()
    await asyncio.wait_for(task, 10)  # not the 60 s backoff
    assert agent.fatal is None
