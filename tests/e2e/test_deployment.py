"""Deployment defences on a real ``lichen up`` with the real model (issue 10).

- llama.cpp's own stderr (which quoted a ``response_format`` pattern) never
  reaches the process's output or files;
- ``lichen up --tls-certfile/--tls-keyfile`` serves HTTPS, its own node joins
  over wss://, and a request completes;
- a request that sticks the engine loop (the worst schema the limits are
  loosened to let through): ``/health`` says ``engine_stalled``, and SIGTERM
  still ends the process after the grace period.
"""

from __future__ import annotations

import contextlib
import json
import signal
import ssl
import subprocess
import threading
import time
import uuid

import httpx
import pytest
from harness import DEFAULT_MODEL, Harness, LogReady, lichen_argv, scrubbed_env
from test_privacy_canary import _leaks

from tls_kit import make_tls

pytestmark = pytest.mark.e2e


def test_engine_stderr_does_not_leak_schema_patterns(harness: Harness) -> None:
    process = harness.up("canary", env={"LICHEN_LOG_LEVEL": "DEBUG"})
    canary = f"canary{uuid.uuid4().hex}"
    # llama.cpp does not support look-behind: it prints the pattern in a warning.
    pattern = f"^(?<={canary})x$"
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": f"Say {canary}."}],
        "max_tokens": 8,
        "temperature": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "string", "pattern": pattern}},
        },
    }
    with httpx.Client(base_url=process.url, timeout=120) as client:
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
    assert process.stop() == 0, process.tail()
    assert _leaks(process, {"pattern": pattern, "canary": canary}) == []


def test_up_serves_tls_and_its_node_joins_over_wss(harness: Harness) -> None:
    tls = make_tls(harness.root)
    process = harness.start(
        "tls",
        [
            "up",
            "--port",
            "{port}",
            "--data-dir",
            "{data_dir}",
            "--model",
            DEFAULT_MODEL,
            "--tls-certfile",
            str(tls.cert),
            "--tls-keyfile",
            str(tls.key),
        ],
        env={"LICHEN_PARALLEL": "2", "LICHEN_CTX_SIZE": "2048"},
        ready=LogReady(r"Lichen is up at https://"),
    )
    trusted = ssl.create_default_context(cafile=str(tls.ca))
    base = f"https://127.0.0.1:{process.port}"
    with httpx.Client(base_url=base, verify=trusted, timeout=120) as client:
        assert client.get("/health").json()["status"] == "ok"
        body = {"model": DEFAULT_MODEL, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{process.port}/health", timeout=5)
    assert "wss://" in process.logs()


def test_stuck_engine_shows_in_health_and_sigterm_still_exits(harness: Harness) -> None:
    loose = {  # let the worst schema through the gateway's and the node's limits
        "LICHEN_SCHEMA_MAX_ENUM": "1000000",
        "LICHEN_SCHEMA_MAX_NODES": "1000000",
        "LICHEN_SCHEMA_MAX_BYTES": "10000000",
        "LICHEN_ENGINE_STALL_S": "2",
        "LICHEN_SHUTDOWN_GRACE_S": "1",
    }
    process = harness.up("stuck", env=loose)
    schema = {"enum": [f"value-{i:05d}-padding" for i in range(6000)]}
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "pick one"}],
        "max_tokens": 4,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }

    def attack() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the process is killed under it
            httpx.post(process.url + "/v1/chat/completions", json=body, timeout=300)

    threading.Thread(target=attack, daemon=True).start()
    deadline = time.monotonic() + 90
    status = ""
    while status != "engine_stalled":
        assert time.monotonic() < deadline, f"never reported the stall\n{process.tail()}"
        try:
            status = httpx.get(process.url + "/health", timeout=5).json()["status"]
        except (httpx.HTTPError, json.JSONDecodeError):
            status = ""
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 90s after SIGTERM\n{process.tail()}")
    assert code == 1, process.tail()
    assert "exiting now" in process.logs(), process.tail()


def _operator(harness: Harness, data_dir: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*lichen_argv(), *args, "--data-dir", data_dir],
        env=scrubbed_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_public_tls_tracker_node_over_wss_and_gated_operator_surfaces(harness: Harness) -> None:
    tls = make_tls(harness.root)
    tracker = harness.start(
        "tracker",
        [
            "tracker",
            "--public",
            "--port",
            "{port}",
            "--data-dir",
            "{data_dir}",
            "--tls-certfile",
            str(tls.cert),
            "--tls-keyfile",
            str(tls.key),
        ],
        ready=LogReady(r"Lichen tracker at https://"),
    )
    assert tracker.data_dir is not None
    data_dir = str(tracker.data_dir)
    invite = _operator(harness, data_dir, "invite", "create")
    assert invite.returncode == 0, invite.stderr
    token = invite.stdout.strip()
    untrusting = harness.start(
        "untrusting",
        ["node", "--join", token, "--data-dir", "{data_dir}", "--parallel", "1"],
        env={"LICHEN_CTX_SIZE": "1024"},
        ready=None,
    )
    assert untrusting.wait(120) == 1, untrusting.tail()
    assert "TLS certificate is not trusted" in untrusting.logs()
    harness.start(
        "node",
        ["node", "--join", token, "--data-dir", "{data_dir}", "--tls-ca", str(tls.ca)],
        env={"LICHEN_PARALLEL": "2", "LICHEN_CTX_SIZE": "2048"},
        ready=LogReady(r"joined tracker wss://"),
    )
    trusted = ssl.create_default_context(cafile=str(tls.ca))
    base = f"https://127.0.0.1:{tracker.port}"
    with httpx.Client(base_url=base, verify=trusted, timeout=120) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, tracker.tail()
            time.sleep(0.2)
        chat = {
            "model": DEFAULT_MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
        }
        assert client.post("/v1/chat/completions", json=chat).status_code == 200
        assert client.get("/v1/network").status_code == 401  # public: operator surfaces gated
        assert client.get("/metrics").status_code == 401
        printed = _operator(harness, data_dir, "operator", "token")
        assert printed.returncode == 0, printed.stderr
        bearer = {"authorization": f"Bearer {printed.stdout.strip()}"}
        assert client.get("/v1/network", headers=bearer).json()["nodes_total"] == 1
    shown = _operator(harness, data_dir, "network", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    live = json.loads(shown.stdout)["live"]  # over https, with the operator token, by itself
    assert live is not None and live["nodes_total"] == 1, shown.stdout
