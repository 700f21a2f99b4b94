"""The operator's commands from another machine: ``--url`` + an operator key against a
live tracker (the real ``tracker_stack`` on a loopback port, real ``NodeAgent`` nodes
with scripted engines). The CLI runs in a worker thread (it is synchronous) while the
server runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result
from fakes import FakeEngine, eventually
from sqlalchemy import select
from typer.testing import CliRunner

from lichen.accounts.keys import ApiKeyService
from lichen.accounts.roles import AccountRoles
from lichen.cli.main import app
from lichen.config import Settings
from lichen.errors import ErrorCode
from lichen.identity.invites import parse_invite
from lichen.identity.store import load_identity
from lichen.node.agent import NodeAgent, NodeConfig
from lichen.roles.tracker import TrackerStack, tracker_stack
from lichen.storage.accounts_tables import OperatorActionRow
from ports import free_port
from tls_kit import make_tls

runner = CliRunner()
PASSWORD = "a long operator password"


@dataclass
class Remote:
    root: Path
    stack: TrackerStack
    key: str  # an operator key
    user_key: str  # a plain user's key (all scopes)
    agents: list[tuple[NodeAgent, asyncio.Task[None]]]

    async def cli(self, *args: str, key: str | None = None, url: str | None = None) -> Result:
        argv = [*args, "--url", url or self.stack.url]
        env = {"LICHEN_OPERATOR_KEY": self.key if key is None else key}
        return await asyncio.to_thread(runner.invoke, app, argv, env=env)

    async def ok(self, *args: str) -> str:
        result = await self.cli(*args)
        assert result.exit_code == 0, result.output
        assert self.key not in result.output  # the key is never echoed
        return result.stdout

    def start_node(self, name: str, token: str) -> NodeAgent:
        invite = parse_invite(token)
        agent = NodeAgent(
            load_identity(self.root / name, node_name=name),
            FakeEngine(model="alpha", delay_s=0.01, tokens=[f" t{i}" for i in range(100_000)]),
            NodeConfig(
                tracker_url=invite.tracker_url,  # exactly what the remote invite carries
                name=name,
                invite=token,
                network_key=invite.network_key,
                backoff_initial_s=0.05,
                backoff_max_s=0.3,
            ),
        )
        self.agents.append((agent, asyncio.create_task(agent.run(), name=f"node-{name}")))
        return agent


def settings_for(root: Path, **extra: object) -> Settings:
    return Settings(
        data_dir=root / "tracker",
        host="127.0.0.1",
        port=0,
        heartbeat_s=0.5,
        membership_poll_s=0.1,
        **extra,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running(root: Path, settings: Settings) -> AsyncIterator[Remote]:
    async with tracker_stack(settings, load_identity(root / "tracker")) as stack:
        assert stack.accounting is not None
        accounts, db = stack.accounting.accounts, stack.db
        op = await accounts.signup("opal", "opal@example.org", PASSWORD)
        user = await accounts.signup("usha", "usha@example.org", PASSWORD)
        await AccountRoles(db).set_role(op.id, "operator")
        keys = ApiKeyService(db)
        key = (await keys.create(op.id, name="ops", scopes=["account"])).secret
        user_key = (await keys.create(user.id, name="u", scopes=["inference", "account"])).secret
        remote = Remote(root, stack, key, user_key, [])
        try:
            yield remote
        finally:
            for agent, _task in remote.agents:
                await agent.stop()
            await asyncio.gather(*(t for _a, t in remote.agents), return_exceptions=True)


@pytest.fixture
async def remote(tmp_path: Path) -> AsyncIterator[Remote]:
    async with running(tmp_path, settings_for(tmp_path, network_mode="private")) as r:
        yield r


def failed(result: Result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    for needle in needles:
        assert needle in text, text
    return text


# --- the whole path: a remote invite, a remote approval, a remote revocation ------------------


async def test_revoke_through_the_admin_api_disconnects_the_node(
    tmp_path: Path, lichen_db_url: str
) -> None:
    settings = settings_for(tmp_path, network_mode="private", database_url=lichen_db_url)
    async with running(tmp_path, settings) as remote:
        token = (await remote.ok("invite", "create", "--max-uses", "2")).strip()
        agent = remote.start_node("n1", token)
        await eventually(lambda: agent.pending, what="the node to be held pending")
        approved = await remote.ok("network", "approve", "n1")  # by node name
        assert approved.startswith(f"approved {agent.identity.peer_id} (n1)")
        registry = remote.stack.tracker.registry
        await eventually(lambda: registry.get(agent.identity.peer_id) is not None, what="join")
        revoked = await remote.ok("network", "revoke", agent.identity.peer_id[:12])
        assert revoked.startswith(f"revoked {agent.identity.peer_id}")
        await eventually(lambda: agent.fatal is not None, what="the node to be dropped")
        assert agent.fatal is not None and agent.fatal.code is ErrorCode.IDENTITY_REVOKED
        assert registry.get(agent.identity.peer_id) is None
        async with remote.stack.db.connect() as conn:
            rows = (await conn.execute(select(OperatorActionRow.action))).scalars().all()
        assert list(rows) == ["invite.create", "member.approve", "member.revoke"]


# --- each command -----------------------------------------------------------------------------


async def test_invites_members_and_grants_from_another_machine(remote: Remote) -> None:
    created = await remote.cli("invite", "create", "--max-uses", "0", "--expires", "never")
    assert created.exit_code == 0, created.output
    invite = parse_invite(created.stdout.strip())
    assert invite.network_key == remote.stack.identity.network_public
    assert invite.tracker_url == remote.stack.info.node_url  # this tracker, as it was reached
    assert invite.max_uses == 0 and invite.expires_ms == 0
    assert "lichen node --data-dir" in created.stderr
    other = await remote.ok(
        "invite",
        "create",
        *("--tracker-url", "wss://t.example.org", "--tracker-url", "wss://t2.example.org"),
        *("--role", "node"),
    )
    urls = parse_invite(other.strip()).tracker_urls()
    assert urls == ["wss://t.example.org", "wss://t2.example.org"]
    listed = json.loads(await remote.ok("invite", "list", "--json"))
    assert {i["id"] for i in listed} == {invite.invite_id, parse_invite(other.strip()).invite_id}
    assert invite.invite_id[:12] in await remote.ok("invite", "list")
    gone = await remote.ok("invite", "revoke", invite.invite_id[:8])
    assert gone.strip() == f"revoked invite {invite.invite_id[:12]}"
    states = {i["id"]: i["state"] for i in json.loads(await remote.ok("invite", "list", "--json"))}
    assert states[invite.invite_id] == "revoked"
    shown = json.loads(await remote.ok("network", "show", "--json"))
    assert shown == {"members": []}
    assert "No members yet." in await remote.ok("network", "show")
    granted = await remote.ok("credits", "grant", "usha", "2.5", "--reason", "welcome")
    assert granted.startswith("granted 2.5") and "balance now 2.5" in granted
    micro = await remote.ok("credits", "grant", "usha", "7", "--micro", "--reason", "tip")
    assert "balance now 2.500007" in micro
    unknown = await remote.cli("credits", "grant", "nobody", "1", "--reason", "x")
    failed(unknown, "no ledger account or user named 'nobody'")
    missing = await remote.cli("network", "revoke", "lp-nobody")
    failed(missing, "no member 'lp-nobody'")
    failed(await remote.cli("network", "revoke", ".."), "no member '..'")  # not a path step
    failed(await remote.cli("network", "approve", "a?b#c"), "no member 'a?b#c'")
    failed(await remote.cli("invite", "revoke", " "), "an empty id or name matches nothing")


async def test_refusals_are_one_clear_line(remote: Remote) -> None:
    url = remote.stack.url
    no_key = await remote.cli("invite", "list", key="")
    failed(no_key, "--url needs an operator key", "LICHEN_OPERATOR_KEY")
    wrong = "lk-" + "w" * 40
    bad = await remote.cli("network", "show", key=wrong)
    text = failed(bad, "refused the operator key (401)")
    assert wrong not in text
    user = await remote.cli("credits", "grant", "usha", "1", "--reason", "x", key=remote.user_key)
    text = failed(user, "refused (403)", "not an operator", "lichen operator grant")
    assert remote.user_key not in text
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = await remote.cli("invite", "list", url=closed)
    failed(unreachable, f"cannot reach {closed}")
    scheme = await remote.cli("invite", "list", url="ftp://example.org")
    failed(scheme, "--url must be an http:// or https:// base URL")
    not_lichen = await remote.cli("invite", "list", url=url + "/nothing-here")
    failed(not_lichen, "has no admin API")
    tls_to_plain = await remote.cli("invite", "list", url=url.replace("http://", "https://"))
    failed(tls_to_plain, "TLS with 127.0.0.1")
    # --url without a key on `invite create` keeps its old meaning (the URL nodes dial),
    # on this machine's data dir: nothing is sent anywhere.
    local = await asyncio.to_thread(
        runner.invoke,
        app,
        ["invite", "create", "--url", "wss://t.example.org", "--data-dir", str(remote.root / "x")],
        env={"LICHEN_OPERATOR_KEY": ""},
    )
    assert local.exit_code == 0, local.output
    assert parse_invite(local.stdout.strip()).tracker_url == "wss://t.example.org"


async def test_a_tls_tracker_needs_its_ca_trusted(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    settings = settings_for(tmp_path, tls_certfile=tls.cert, tls_keyfile=tls.key)
    async with running(tmp_path, settings) as remote:
        assert remote.stack.url.startswith("https://")
        untrusted = await remote.cli("invite", "list")
        failed(untrusted, "cannot verify the TLS certificate", "--ca-file")
        trusted = await remote.cli("invite", "list", "--json", "--ca-file", str(tls.ca))
        assert trusted.exit_code == 0, trusted.output
        assert json.loads(trusted.stdout) == []
