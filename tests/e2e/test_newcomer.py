"""A newcomer's first steps with real processes and the real model: a second node from the
same data dir, a second ``lichen up`` on a busy port, and a clean stop."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from harness import Harness, lichen_argv, scrubbed_env

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 120


def lichen(
    models_dir: Path, *args: str, data_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"LICHEN_MODELS_DIR": str(models_dir)}
    if data_dir is not None:
        env["LICHEN_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [*lichen_argv(), *args],
        env=scrubbed_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def test_a_second_node_from_the_same_data_dir_is_refused_and_exits(
    harness: Harness, models_dir: Path, tmp_path: Path
) -> None:
    up = harness.up()
    assert up.data_dir is not None
    made = lichen(models_dir, "invite", "create", "--data-dir", str(up.data_dir))
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert "--data-dir" in made.stderr  # the printed join command has its own data dir

    # What a newcomer does first: the same machine, no --data-dir of its own.
    second = lichen(models_dir, "node", "--join", token, "--data-dir", str(up.data_dir))
    assert second.returncode == 1, second.stderr[-2000:]
    assert "identity_in_use" in second.stderr and "--data-dir" in second.stderr

    # The first node was never kicked off.
    health = httpx.get(up.url + "/health", timeout=10).json()
    assert health["nodes"] == 1 and health["status"] == "ok"
    assert up.logs().count("joined tracker") == 1  # it never had to reconnect

    # A second `lichen up` on the same port fails at once, naming Lichen and --port.
    other = tmp_path / "other"
    busy = lichen(
        models_dir, "up", "--port", str(up.port), "--data-dir", str(other), data_dir=other
    )
    assert busy.returncode == 1
    assert "already running" in busy.stderr and "--port" in busy.stderr
    assert not (other / "keys").exists()  # it failed before creating an identity

    # A clean SIGTERM is not reported as the tracker being unreachable.
    up.send_signal(signal.SIGTERM)
    assert up.wait(30) == 0, up.tail()
    assert "unreachable" not in up.logs()
