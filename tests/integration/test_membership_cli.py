"""The operator's commands against a tracker's data dir: invites and members."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lichen.cli._operator import ago, parse_duration, until
from lichen.cli.main import app
from lichen.identity.invites import parse_invite
from lichen.identity.store import load_identity
from lichen.storage.engine import create_engine, migrate
from lichen.storage.membership import MemberRecord, MembershipRepository

runner = CliRunner()


def lichen(data_dir: Path, *args: str) -> str:
    result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    return result.stdout


def add_member(data_dir: Path, name: str, status: str = "pending") -> str:
    async def add() -> str:
        url = f"sqlite+aiosqlite:///{data_dir / 'lichen.db'}"
        await migrate(url)
        engine = create_engine(url)
        try:
            pid = f"lp-{name}aaaaaaaaaaaaaaaaaaaaaaaaaaaa"[:35]
            await MembershipRepository(engine).join(
                MemberRecord(
                    peer_id=pid,
                    device_key=b"\x01" * 32,
                    account_key=b"\x02" * 32,
                    name=name,
                    trust="community",
                    status="pending" if status == "pending" else "approved",
                    invite_id=None,
                    first_seen_ms=1,
                    last_seen_ms=1,
                ),
                now_ms=1,
            )
            return pid
        finally:
            await engine.dispose()

    return asyncio.run(add())


def test_invite_create_list_revoke(tmp_path: Path) -> None:
    data = tmp_path / "tracker"
    token = lichen(data, "invite", "create", "--max-uses", "3", "--expires", "2h").strip()
    invite = parse_invite(token)
    assert invite.network_key == load_identity(data).network_public  # signed by this network
    assert (invite.max_uses, invite.roles) == (3, ["node"])
    assert invite.tracker_url == "ws://127.0.0.1:8470/v1/node/connect"  # no tracker running
    listed = json.loads(lichen(data, "invite", "list", "--json"))
    assert [(i["id"], i["uses"], i["max_uses"], i["state"]) for i in listed] == [
        (invite.invite_id, 0, 3, "active")
    ]
    assert "0/3" in lichen(data, "invite", "list")
    assert lichen(data, "invite", "revoke", invite.invite_id[:6]).startswith("revoked invite")
    assert json.loads(lichen(data, "invite", "list", "--json"))[0]["state"] == "revoked"
    token_text = (data / "lichen.db").read_bytes()
    assert token.encode() not in token_text  # the bearer token itself is never stored


def test_invite_url_option_and_bad_expiry(tmp_path: Path) -> None:
    data = tmp_path / "tracker"
    token = lichen(data, "invite", "create", "--url", "https://tracker.example.org").strip()
    assert parse_invite(token).tracker_url == "https://tracker.example.org"
    bad = runner.invoke(app, ["invite", "create", "--expires", "soon", "--data-dir", str(data)])
    assert bad.exit_code == 1 and "cannot read 'soon'" in bad.output
    missing = runner.invoke(app, ["invite", "revoke", "ffff", "--data-dir", str(data)])
    assert missing.exit_code == 1 and "no invite" in missing.output


def test_network_approve_revoke_and_show_without_a_running_tracker(tmp_path: Path) -> None:
    data = tmp_path / "tracker"
    load_identity(data)
    pid = add_member(data, "volunteer")
    shown = json.loads(lichen(data, "network", "show", "--json"))
    assert [(m["peer_id"], m["status"]) for m in shown["members"]] == [(pid, "pending")]
    assert shown["live"] is None
    assert "Tracker not running here" in lichen(data, "network", "show")
    assert lichen(data, "network", "approve", "volunteer") == f"approved {pid} (volunteer)\n"
    assert lichen(data, "network", "revoke", pid[:8]) == f"revoked {pid} (volunteer)\n"
    shown = json.loads(lichen(data, "network", "show", "--json"))
    assert shown["members"][0]["status"] == "revoked"
    unknown = runner.invoke(app, ["network", "approve", "nobody", "--data-dir", str(data)])
    assert unknown.exit_code == 1 and "no member" in unknown.output


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("1.5h", 5400)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["never", "0", "none"])
def test_parse_duration_never(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize("text", ["soon", "-5m", "h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_relative_times() -> None:
    assert ago(0) == "-" and until(0) == "never"
    assert ago(1_000, now_ms=61_000) == "1m ago"
    assert until(2_000, now_ms=1_000) == "in 1s"
    assert until(1_000, now_ms=1_000) == "expired"
    assert ago(1, now_ms=3 * 86_400_000) == "2d ago"
