"""A busy port is a clear error before any model loads, naming ``--port`` (and Lichen when
Lichen itself is what listens there); a mistyped model leaves no keys behind."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import LocalNetwork
from typer.testing import CliRunner

from lichen.cli.main import app
from lichen.config import Settings
from lichen.errors import ErrorCode, LichenError
from lichen.portcheck import ensure_port_free, port_in_use
from lichen.up import run_up

runner = CliRunner()


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("LICHEN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another (non-Lichen) program listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def test_a_free_port_and_port_zero_pass() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = int(sock.getsockname()[1])
    assert not port_in_use("127.0.0.1", free)
    assert not port_in_use("127.0.0.1", 0)
    ensure_port_free("127.0.0.1", 0)


async def test_up_on_a_busy_port_fails_before_loading_the_model(
    tmp_path: Path, busy_port: int
) -> None:
    # The model does not exist: reaching the model step would be MODEL_NOT_FOUND instead.
    settings = Settings(
        data_dir=tmp_path / "data", host="127.0.0.1", port=busy_port, model="no-such-model"
    )
    with pytest.raises(LichenError) as info:
        await run_up(settings, stop=asyncio.Event())
    assert info.value.code is ErrorCode.CONFLICT
    assert f"--port {busy_port + 1}" in info.value.message
    assert "another program" in info.value.message
    assert not (tmp_path / "data" / "keys").exists()


async def test_a_running_lichen_on_the_port_is_named(tmp_path: Path) -> None:
    net = await LocalNetwork(tmp_path).start()
    try:
        with pytest.raises(LichenError) as info:
            await asyncio.to_thread(ensure_port_free, "127.0.0.1", net.port)
    finally:
        await net.close()
    assert info.value.code is ErrorCode.CONFLICT
    assert "Lichen" in info.value.message and "already running" in info.value.message
    assert "--port" in info.value.message


def test_tracker_cli_on_a_busy_port_exits_with_the_hint(tmp_path: Path, busy_port: int) -> None:
    result = runner.invoke(
        app, ["tracker", "--port", str(busy_port), "--data-dir", str(tmp_path / "t")]
    )
    assert result.exit_code == 1
    assert "--port" in result.output and "in use" in result.output


def test_up_with_an_unknown_model_creates_no_keys(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = runner.invoke(app, ["up", "--model", "llama3", "--port", "0", "--data-dir", str(data)])
    assert result.exit_code == 1, result.output
    assert "llama3" in result.output
    assert not (data / "keys").exists()
