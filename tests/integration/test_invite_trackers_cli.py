"""``lichen invite create --tracker-url`` repeated: one invite naming several trackers."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from lichen.cli.main import app
from lichen.identity.invites import parse_invite

runner = CliRunner()
T1 = "wss://t1.example.org/v1/node/connect"
T2 = "wss://t2.example.org/v1/node/connect"


def _create(data: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["invite", "create", *args, "--data-dir", str(data)])
    return result.exit_code, result.output


def test_a_repeated_tracker_url_names_every_tracker_in_order(tmp_path: Path) -> None:
    code, output = _create(tmp_path, "--tracker-url", T1, "--tracker-url", T2)
    assert code == 0, output
    token = output.strip().splitlines()[-1]
    assert parse_invite(token).tracker_urls() == [T1, T2]
    listed = runner.invoke(app, ["invite", "list", "--json", "--data-dir", str(tmp_path)])
    assert parse_invite(token).invite_id[:12] in listed.stdout  # stored like any invite


def test_one_tracker_url_makes_a_one_tracker_invite(tmp_path: Path) -> None:
    code, output = _create(tmp_path, "--tracker-url", T1)
    assert code == 0, output
    invite = parse_invite(output.strip().splitlines()[-1])
    assert invite.tracker_urls() == [T1] and invite.other_tracker_urls == []


def test_unusable_tracker_lists_are_refused(tmp_path: Path) -> None:
    for args, problem in [
        (["--tracker-url", T1, "--tracker-url", "file:///etc/passwd"], "scheme"),
        (["--tracker-url", T1, "--tracker-url", T1], "twice"),
        ([arg for i in range(17) for arg in ("--tracker-url", f"wss://t{i}.example.org")], "16"),
    ]:
        code, output = _create(tmp_path, *args)
        assert code == 1 and problem in output, output
        assert "lichen1." not in output
    listed = runner.invoke(app, ["invite", "list", "--json", "--data-dir", str(tmp_path)])
    assert listed.stdout.strip() in ("", "[]")  # nothing was stored
