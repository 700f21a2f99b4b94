"""``lichen up`` stops cleanly on SIGTERM and Ctrl-C, finishing what it started."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import httpx
import pytest
from harness import DEFAULT_MODEL, Harness, LichenProcess

pytestmark = pytest.mark.e2e

STOP_WITHIN_S = 10.0


def _assert_clean_exit(process: LichenProcess, sig: signal.Signals) -> float:
    started = time.monotonic()
    process.send_signal(sig)
    try:
        code = process.wait(STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_WITHIN_S}s after {sig.name}\n{process.tail()}")
    elapsed = time.monotonic() - started
    assert code == 0, process.tail()
    logs = process.logs()
    assert "Traceback" not in logs, process.tail(80)
    assert "stopped" in logs
    return elapsed


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_process_stops_cleanly(harness: Harness, sig: signal.Signals) -> None:
    process = harness.up()
    assert _assert_clean_exit(process, sig) < STOP_WITHIN_S
    with pytest.raises(httpx.ConnectError):
        httpx.get(process.url + "/health", timeout=2)


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
        deadline = time.monotonic() + 5
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

    try:
        code = process.wait(STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail("did not exit after draining\n" + process.tail())
    assert code == 0, process.tail()
    assert "Traceback" not in process.logs()
