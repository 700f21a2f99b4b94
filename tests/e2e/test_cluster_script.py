"""``scripts/cluster.sh --smoke``: the README's one-command local cluster works and cleans up.

It starts PostgreSQL, NATS, Redis, two trackers, two gateways and two nodes with the
real model, answers one chat through each gateway and stops everything; afterwards no
port of its range is still open.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from harness import scrubbed_env

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SPAN = 23  # ports base .. base+22
SCRIPT_TIMEOUT_S = 600


def _open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(SCRIPT_TIMEOUT_S + 180)
def test_the_cluster_script_answers_through_both_gateways_and_stops(
    tmp_path: Path, models_dir: Path
) -> None:
    base = random.randrange(20_000, 60_000, 100)
    env = scrubbed_env(
        {
            "LICHEN_CLUSTER_DIR": str(tmp_path / "cluster"),
            "LICHEN_CLUSTER_PORT": str(base),
            "LICHEN_MODELS_DIR": str(models_dir),
            "XDG_DATA_HOME": str(tmp_path / "xdg"),
        }
    )
    env["PATH"] = os.environ.get("PATH", "")
    script = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "cluster.sh"), "--smoke"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = script.communicate(timeout=SCRIPT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        script.terminate()  # its trap stops what it started
        stdout, stderr = script.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGKILL)  # anything its trap missed
    result = subprocess.CompletedProcess(script.args, script.returncode, stdout, stderr)
    logs = tmp_path / "cluster" / "logs"
    tails = "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}"
        for log in sorted(logs.glob("*.log"))
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{tails}"
    answered = [line for line in result.stdout.splitlines() if "answered through node" in line]
    assert len(answered) == 2, result.stdout
    assert f":{base} answered" in answered[0] and f":{base + 1} answered" in answered[1]
    assert "smoke test passed" in result.stdout
    still_open = [port for port in range(base, base + SPAN) if _open(port)]
    assert still_open == [], f"ports left open after the script: {still_open}"
