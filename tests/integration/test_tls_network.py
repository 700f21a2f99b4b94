"""A tracker serving TLS itself; nodes join over wss:// (issue 10).

The tracker is the real ``tracker_stack`` with ``tls_certfile``/``tls_keyfile``
from a throwaway CA made in the test; nodes are real ``NodeAgent`` instances
with scripted engines.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import httpx
import pytest
from fakes import FakeEngine, eventually

from lichen.config import Settings
from lichen.errors import ErrorCode
from lichen.identity.store import load_identity
from lichen.node.agent import NodeAgent, NodeConfig
from lichen.roles.tracker import TrackerStack, tracker_stack
from lichen.server import client_tls
from tls_kit import TlsFiles, make_tls


def _settings(root: Path, tls: TlsFiles) -> Settings:
    return Settings(
        data_dir=root / "tracker",
        host="127.0.0.1",
        port=0,
        network_mode="public",
        heartbeat_s=0.5,
        tls_certfile=tls.cert,
        tls_keyfile=tls.key,
    )


def _agent(root: Path, stack: TrackerStack, tls: ssl.SSLContext | None) -> NodeAgent:
    return NodeAgent(
        load_identity(root / "node", node_name="n1"),
        FakeEngine(model="alpha"),
        NodeConfig(
            tracker_url=stack.info.node_url,  # what an invite would carry
            name="n1",
            network_key=stack.identity.network_public,
            backoff_initial_s=0.05,
            backoff_max_s=0.3,
            tls=tls,
        ),
    )


async def test_node_joins_over_wss_with_a_private_ca_and_serves(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    async with tracker_stack(_settings(tmp_path, tls), load_identity(tmp_path / "tracker")) as s:
        assert s.url.startswith("https://")
        assert s.info.node_url.startswith("wss://")
        agent = _agent(tmp_path, s, client_tls(tls.ca))
        task = asyncio.create_task(agent.run())
        try:
            await eventually(lambda: len(s.tracker.registry) == 1, what="the wss join")
            async with httpx.AsyncClient(
                base_url=s.url, verify=ssl.create_default_context(cafile=str(tls.ca))
            ) as client:
                r = await client.post(
                    "/v1/chat/completions",
                    json={"model": "alpha", "messages": [{"role": "user", "content": "hi"}]},
                )
            assert r.status_code == 200, r.text
            assert (
                r.json()["choices"][0]["message"]["content"] == "Hello, this is a scripted answer."
            )
        finally:
            await agent.stop()
            await asyncio.gather(task, return_exceptions=True)


async def test_node_without_trust_for_the_certificate_is_refused_clearly(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    other = make_tls(tmp_path, prefix="other-")  # a CA that did not sign the tracker's cert
    async with tracker_stack(_settings(tmp_path, tls), load_identity(tmp_path / "tracker")) as s:
        for trust in (None, client_tls(other.ca)):  # system CAs only; the wrong private CA
            agent = _agent(tmp_path, s, trust)
            task = asyncio.create_task(agent.run())
            try:
                await eventually(lambda a=agent: a.fatal is not None, what="the refusal")  # type: ignore[misc]
                assert agent.fatal is not None
                assert agent.fatal.code is ErrorCode.HANDSHAKE_FAILED
                assert "not trusted" in agent.fatal.message
                assert "LICHEN_TLS_CA_FILE" in agent.fatal.message
                assert len(s.tracker.registry) == 0
            finally:
                await agent.stop()
                await asyncio.gather(task, return_exceptions=True)


async def test_plain_ws_node_cannot_talk_to_a_tls_tracker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lichen.node.agent")
    tls = make_tls(tmp_path)
    async with tracker_stack(_settings(tmp_path, tls), load_identity(tmp_path / "tracker")) as s:
        agent = NodeAgent(
            load_identity(tmp_path / "node", node_name="n1"),
            FakeEngine(model="alpha"),
            NodeConfig(
                tracker_url=s.info.node_url.replace("wss://", "ws://"),
                name="n1",
                network_key=s.identity.network_public,
                backoff_initial_s=0.05,
                backoff_max_s=0.1,
            ),
        )
        task = asyncio.create_task(agent.run())

        def attempts(words: str) -> int:
            return sum(words in r.getMessage() for r in caplog.records)

        try:
            # Counted attempts, not a wait for nothing: three tries, each failed at the door.
            failed = ("tracker unreachable", "link to tracker failed")
            await eventually(lambda: sum(map(attempts, failed)) >= 3, what="three failed tries")
            assert attempts("joined tracker") == 0 and not agent.connected.is_set()
            assert len(s.tracker.registry) == 0
        finally:
            await agent.stop()
            await asyncio.gather(task, return_exceptions=True)


def test_unreadable_ca_file_is_a_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("nope")
    from lichen.errors import LichenError

    with pytest.raises(LichenError) as caught:
        client_tls(bad)
    assert caught.value.param == "tls_ca_file"
    assert client_tls(None) is None
