"""``lichen models`` through Typer's CliRunner, on a temp data dir."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from lichen.cli.models import RichProgress, app

runner = CliRunner()


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never read a developer's LICHEN_* settings or config file."""
    for key in list(os.environ):
        if key.startswith("LICHEN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def gguf(path: Path) -> str:
    data = b"GGUF" + b"\x01" * 100
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_pull_list_rm_round_trip(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    src = tmp_path / "Tiny.gguf"
    digest = gguf(src)

    pulled = runner.invoke(app, ["pull", str(src), "--data-dir", str(data_dir)])
    assert pulled.exit_code == 0, pulled.output
    assert f"sha256 {digest}" in pulled.stdout

    listed = runner.invoke(app, ["list", "--data-dir", str(data_dir), "--json"])
    assert listed.exit_code == 0, listed.output
    (entry,) = json.loads(listed.stdout)
    assert (entry["name"], entry["sha256"], entry["linked"]) == ("tiny", digest, False)
    assert Path(entry["path"]).is_file()

    table = runner.invoke(app, ["list", "--data-dir", str(data_dir)])
    assert table.exit_code == 0 and "tiny" in table.stdout and digest[:12] in table.stdout

    removed = runner.invoke(app, ["rm", "tiny", "--data-dir", str(data_dir)])
    assert removed.exit_code == 0, removed.output
    assert not Path(entry["path"]).exists()
    assert (
        json.loads(runner.invoke(app, ["list", "--json", "--data-dir", str(data_dir)]).stdout) == []
    )


def test_data_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LICHEN_DATA_DIR", str(tmp_path / "env-data"))
    src = tmp_path / "m.gguf"
    gguf(src)
    result = runner.invoke(app, ["pull", str(src), "--link"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env-data" / "models" / "m" / "model.json").is_file()

    monkeypatch.setenv("LICHEN_MODELS_DIR", str(tmp_path / "shared-models"))
    result = runner.invoke(app, ["pull", str(src)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "shared-models" / "m" / "m.gguf").is_file()


def test_errors_are_one_line_on_stderr_with_exit_1(tmp_path: Path) -> None:
    data_dir = ["--data-dir", str(tmp_path / "data")]
    src = tmp_path / "m.gguf"
    gguf(src)
    cases = [
        (["pull", "no-such-model", *data_dir], "unknown model"),
        (["pull", src.as_uri(), *data_dir], "--sha256"),
        (["pull", src.as_uri(), "--sha256", "0" * 64, *data_dir], "mismatch"),
        (["pull", str(src), "--name", "../evil", *data_dir], "invalid model name"),
        (["rm", "nothing", *data_dir], "no model named"),
    ]
    for args, needle in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert needle in result.stderr.replace("\n", " "), result.stderr
        assert "Traceback" not in result.output
    assert not (tmp_path / "data" / "models" / "m").exists()


def test_empty_list_hints_at_pull(tmp_path: Path) -> None:
    result = runner.invoke(app, ["list", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "lichen models pull" in result.stderr


def test_rich_progress_can_run_several_transfers() -> None:
    out = io.StringIO()
    progress = RichProgress(Console(file=out, force_terminal=True, width=100))
    for description in ["Downloading a", "Verifying a"]:
        progress.start(1000, description)
        progress.advance(600)
        progress.advance(400)
        progress.finish()
    progress.finish()  # idempotent
    assert "Downloading a" in out.getvalue() and "Verifying a" in out.getvalue()
