"""``lichen up`` stops cleanly on SIGTERM and Ctrl-C, finishing what it started.

Clean means behaviour, not speed: after the signal the process exits by itself
(``EXIT_TIMEOUT_S`` only tells a hang from a slow exit on a loaded runner) with code 0,
no traceback, nothing left of its process group, and its port free again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time

import httpx
import pytest
from harness import DEFAULT_MODEL, Harness, LichenProcess

pytestmark = pytest.mark.e2e

EXIT_TIMEOUT_S = 120.0  # generous: a process that has not exited by then hangs


def _exits_by_itself(process: LichenProcess, after: str) -> None:
    """The process exits on its own (nothing kills it) with code 0 and no traceback; no
    process of its group (it runs in its own session) is left, and its port is free."""
    try:
        code = process.wait(EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {EXIT_TIMEOUT_S:.0f}s after {after}\n{process.tail()}")
    assert code == 0, process.tail()
    logs = process.logs()
    assert "Traceback" not in logs, process.tail(80)
    with contextlib.suppress(ProcessLookupError):  # ProcessLookupError: the group is empty
        os.killpg(process.pid, 0)
        pytest.fail(f"{process.name} exited but left processes in its group")
    assert process.port is not None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a listener
        sock.bind((process.host, process.port))  # OSError if something still listens there
        sock.listen()
    with pytest.raises(httpx.ConnectError):
        httpx.get(process.url + "/health", timeout=2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_process_stops_cleanly(harness: Harness, sig: signal.Signals) -> None:
    process = harness.up()
    process.send_signal(sig)
    _exits_by_itself(process, sig.name)
    assert "stopped" in process.logs()


def test_sigterm_drains_in_flight_streams_and_refuses_new_work(harness: Harness) -> None:
    process = harness.up()
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
        "stream": True,
        "max_tokens": 96,  # long enough to still run while we probe
        "temperature": 0,
    }
    probe = {"model": DEFAULT_MODEL, "prompt": "Hi", "max_tokens": 1}
    with (
        httpx.Client(base_url=process.url, timeout=60) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first.removeprefix("data: "))["object"] == "chat.completion.chunk"

        process.send_signal(signal.SIGTERM)
        # While the node drains, new work is refused with 503 (not 404, not a hang).
        deadline = time.monotonic() + EXIT_TIMEOUT_S  # until the first 503; generous
        refused = None
        while time.monotonic() < deadline:
            r = client.post("/v1/completions", json=probe)
            if r.status_code == 503:
                refused = r
                break
            assert r.status_code == 200, r.text
            time.sleep(0.05)
        assert refused is not None, "no 503 while draining\n" + process.tail()
        assert refused.json()["error"]["code"] == "no_capacity"

        # The stream that was running finishes normally.
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    payloads = [json.loads(line.removeprefix("data: ")) for line in rest[:-1]]
    assert all("error" not in p for p in payloads)
    finishes = [p["choices"][0]["finish_reason"] for p in payloads if p["choices"]]
    assert finishes[-1] in ("stop", "length")

    _exits_by_itself(process, "SIGTERM and draining")
