"""The CLI's tables fit an 80-column terminal: wrapped or trimmed, never cut to ``…``."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from lichen.cli.main import app
from lichen.cli.network import members_table, nodes_table
from lichen.storage.membership import MemberRecord

runner = CliRunner(env={"COLUMNS": "80"})
PEER = "lp-" + "a" * 32


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("LICHEN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("COLUMNS", "80")


def assert_fits(text: str) -> None:
    assert text.strip()
    for line in text.splitlines():
        assert len(line) <= 80, f"{len(line)} columns: {line!r}"
    assert "…" not in text, text


def render(table: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(table)
    return out.getvalue()


def member(peer: str, name: str, seen_ms: int) -> MemberRecord:
    return MemberRecord(
        peer_id=peer,
        device_key=b"\x01" * 32,
        account_key=b"\x02" * 32,
        name=name,
        trust="community",
        status="approved",
        invite_id=None,
        first_seen_ms=1,
        last_seen_ms=seen_ms,
    )


def live_node(peer: str, name: str, models: list[str]) -> dict[str, Any]:
    return {
        "peer_id": peer,
        "name": name,
        "state": "serving",
        "models": [{"name": m} for m in models],
        "free_slots": 4,
        "queue_depth": 12,
        "tokens_per_s": 123.4,
        "inflight": 10,
    }


def test_members_table_fits_and_keeps_the_full_peer_id() -> None:
    now = 10 * 60_000
    owner = "lp-" + "b" * 32
    members = [member(PEER, "a-rather-long-node-name", 60_000), member(owner, "", 1)]
    connected = {owner: live_node(owner, "laptop", ["smollm2-135m"])}
    text = render(members_table(members, connected, now))
    assert_fits(text)
    assert PEER in text and owner in text  # copied into approve/revoke: never cut
    owner_line = next(line for line in text.splitlines() if owner in line)
    # A connected member is seen now, and shows the name it connected with.
    assert "connected" in owner_line and "laptop" in owner_line and " - " not in owner_line
    assert "9m ago" in text  # the other one, last seen 9 minutes ago


def test_nodes_table_fits_with_several_long_model_names() -> None:
    nodes = [
        live_node(PEER, "localhost-node", ["smollm2-135m", "gemma3-270m", "qwen2.5-0.5b-q4"]),
        live_node("lp-" + "c" * 32, "n2", ["smollm2-135m"]),
    ]
    text = render(nodes_table(nodes))
    assert_fits(text)
    assert "smollm2-135m" in text and "gemma3-270m" in text and "qwen2.5-0.5b-q4" in text
    assert PEER[:11] in text and "123.4" in text


def test_network_show_without_a_tracker_fits(tmp_path: Path) -> None:
    result = runner.invoke(app, ["network", "show", "--data-dir", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)


def test_models_list_fits_and_json_keeps_every_field(tmp_path: Path) -> None:
    data_dir = tmp_path / "a-data-dir-with-a-fairly-long-name" / "lichen"
    src = tmp_path / "Some-Model-With-A-Long-File-Name.Q4_K_M.gguf"
    data = b"GGUF" + b"\x02" * 100
    src.write_bytes(data)
    pulled = runner.invoke(
        app, ["models", "pull", str(src), "--name", "tiny", "--data-dir", str(data_dir)]
    )
    assert pulled.exit_code == 0, pulled.output
    table = runner.invoke(app, ["models", "list", "--data-dir", str(data_dir)])
    assert table.exit_code == 0, table.output
    assert_fits(table.stdout)
    assert "tiny" in table.stdout and hashlib.sha256(data).hexdigest()[:12] in table.stdout
    listed = json.loads(
        runner.invoke(app, ["models", "list", "--json", "--data-dir", str(data_dir)]).stdout
    )
    assert listed[0]["path"].endswith(".gguf") and listed[0]["name"] == "tiny"
    folded = "".join(table.stdout.split())  # the path wraps but is all there
    assert "Q4_K_M.gguf" in folded


def test_invite_list_fits(tmp_path: Path) -> None:
    data = tmp_path / "t"
    for _ in range(2):
        made = runner.invoke(
            app, ["invite", "create", "--max-uses", "0", "--role", "node", "--data-dir", str(data)]
        )
        assert made.exit_code == 0, made.output
    listed = runner.invoke(app, ["invite", "list", "--data-dir", str(data)])
    assert listed.exit_code == 0, listed.output
    assert_fits(listed.stdout)
