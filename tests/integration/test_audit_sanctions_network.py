"""Audit sanctions on a running tracker, over the real wire.

The real ``tracker_stack`` with audits on and real ``NodeAgent`` nodes (scripted
engines): ``audit_sanction = "revoke"`` drops a node that fails its audits and
refuses it on reconnect with ``identity_revoked``; under the default ``quarantine``
the node stays connected without jobs until ``lichen network audits PEER --release``
(another process's database write) reaches the running tracker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fakes import FakeEngine, eventually
from test_membership_network import Net, chat, settings_for
from typer.testing import CliRunner

from lichen.audit.service import AuditService
from lichen.audit.verifier import Finding, Verdict
from lichen.cli.main import app
from lichen.errors import ErrorCode
from lichen.gateway.completions import NODE_HEADER
from lichen.identity.store import load_identity
from lichen.roles.tracker import tracker_stack

FAIL = Verdict(False, (Finding("usage", "claimed 60 completion tokens, the text has 9"),))
MODEL = "fake-model"


@asynccontextmanager
async def audited(root: Path, sanction: str) -> AsyncIterator[Net]:
    settings = settings_for(root).model_copy(
        update={"audits": True, "audit_sanction": sanction, "audit_quarantine_after": 2}
    )
    async with tracker_stack(settings, load_identity(root / "tracker")) as stack:
        net = Net(root, stack)
        try:
            yield net
        finally:
            await net.close()


def audits_of(net: Net) -> AuditService:
    assert net.stack.audits is not None
    return net.stack.audits


async def fail_audits(net: Net, peer: str, times: int) -> None:
    for _ in range(times):
        await audits_of(net).book.record(peer_id=peer, model=MODEL, verdict=FAIL)


async def test_revoke_sanction_drops_the_node_and_refuses_its_reconnect(tmp_path: Path) -> None:
    async with audited(tmp_path, "revoke") as net:
        agent = net.start_node("n1", FakeEngine(), await net.invite())
        await net.joined(agent)
        pid = agent.identity.peer_id
        await fail_audits(net, pid, 1)
        member = await net.stack.members.member(pid)
        assert member is not None and member.status == "approved"  # one failure: nothing more
        await fail_audits(net, pid, 1)
        await eventually(lambda: agent.fatal is not None, what="the node to be dropped")
        assert agent.fatal is not None and agent.fatal.code is ErrorCode.IDENTITY_REVOKED
        assert net.registry.get(pid) is None
        member = await net.stack.members.member(pid)
        assert member is not None and member.status == "revoked"
        again = net.start_node("n1", FakeEngine(), await net.invite())  # same identity
        await eventually(lambda: again.fatal is not None, what="the reconnect to be refused")
        assert again.fatal is not None and again.fatal.code is ErrorCode.IDENTITY_REVOKED
        assert net.registry.get(pid) is None


async def test_quarantine_keeps_the_node_connected_until_the_cli_releases_it(
    tmp_path: Path,
) -> None:
    async with audited(tmp_path, "quarantine") as net:
        agent = net.start_node("n1", FakeEngine(), await net.invite())
        await net.joined(agent)
        pid = agent.identity.peer_id
        await fail_audits(net, pid, 2)
        assert audits_of(net).quarantined(pid)
        refused = await net.client.post("/v1/chat/completions", json=chat(MODEL))
        assert refused.status_code == 503, refused.text  # its only node gets no jobs
        assert net.registry.get(pid) is not None and agent.fatal is None  # still connected
        data_dir = str(net.stack.settings.data_dir)
        result = await asyncio.to_thread(  # the operator's CLI: another process's DB write
            CliRunner().invoke,
            app,
            ["network", "audits", pid[:12], "--release", "--reason", "fp", "--data-dir", data_dir],
        )
        assert result.exit_code == 0, result.output
        assert f"released {pid}" in result.stdout and "approve" not in result.stdout
        await eventually(lambda: not audits_of(net).quarantined(pid), what="the release")
        served = await net.client.post("/v1/chat/completions", json=chat(MODEL))
        assert served.status_code == 200, served.text
        assert served.headers[NODE_HEADER] == pid
        record = audits_of(net).record_of(pid, recent=5)
        assert record is not None and record["failed"] == 2  # the evidence stays
        assert record["released"]["reason"] == "fp"
        second = await asyncio.to_thread(
            CliRunner().invoke, app, ["network", "audits", pid, "--release", "--data-dir", data_dir]
        )
        assert second.exit_code == 1 and "not quarantined" in " ".join(second.stderr.split())
