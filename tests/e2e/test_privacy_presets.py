"""Privacy presets with the real model and ``lichen up``.

``dataset``: every exchange is kept, only in the database, disclosed in every
response header, exported with ``lichen privacy export``, and the audit passes.
``screened``: a blocked category is refused before any node sees it, personal data
never reaches a file or a log line, and ``/privacy.json`` is signed.
(``private`` is covered by ``test_privacy_canary.py``.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from harness import DEFAULT_MODEL, Harness, LichenProcess, lichen_argv, scrubbed_env

from lichen.privacy.policy import preset_text
from lichen.privacy.signing import verify_public_json

pytestmark = pytest.mark.e2e


def _with_policy(harness: Harness, name: str, preset: str) -> Path:
    data_dir = harness.root / name / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "policy.toml").write_text(preset_text(preset), encoding="utf-8")
    return data_dir


def _found_in(process: LichenProcess, secret: str) -> set[str]:
    assert process.data_dir is not None
    places = {
        p.name
        for p in process.data_dir.rglob("*")
        if p.is_file() and secret.encode() in p.read_bytes()
    }
    if secret.encode() in process.log_bytes():
        places.add("logs")
    return places


def _lichen(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*lichen_argv(), *args, "--data-dir", str(data_dir)],
        env=scrubbed_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _chat(client: httpx.Client, content: str, stream: bool) -> httpx.Response:
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 24,
        "temperature": 0,
        "stream": stream,
    }
    return client.post("/v1/chat/completions", json=body)


def test_dataset_logs_fully_and_discloses_it(harness: Harness) -> None:
    data_dir = _with_policy(harness, "dataset", "dataset")
    process = harness.up("dataset", env={"LICHEN_LOG_LEVEL": "DEBUG"})
    canary = f"canary-{uuid.uuid4().hex}"
    with httpx.Client(base_url=process.url, timeout=120) as client:
        for stream in (False, True):
            r = _chat(client, f"Repeat the word {canary} once.", stream)
            assert r.status_code == 200, r.text
            assert r.headers["x-lichen-data-policy"] == (
                "dataset; prompts-logged=full; public-feed=off"
            )
            assert r.headers["x-lichen-deletion-token"].startswith("ldt_")
        assert client.get("/health").headers["x-lichen-data-policy"].startswith("dataset")
        assert verify_public_json(client.get("/privacy.json").json()).name == "dataset"

    found = _found_in(process, canary)
    assert found and all(name.startswith("lichen.db") for name in found), found
    assert process.stop(signal.SIGTERM) == 0
    assert "logs" not in _found_in(process, canary)

    exported = _lichen("privacy", "export", data_dir=data_dir)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(lines) == 2 and all(canary in json.dumps(line["prompt"]) for line in lines)
    assert all(line["completion"] for line in lines)
    audit = _lichen("privacy", "audit", "--json", data_dir=data_dir)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)
    assert {c["data_class"]: c["rows"] for c in report["classes"]}["prompt"] == 2


def test_screened_blocks_and_keeps_personal_data_out(harness: Harness) -> None:
    data_dir = _with_policy(harness, "screened", "screened")
    process = harness.up("screened", env={"LICHEN_LOG_LEVEL": "DEBUG"})
    email = f"canary.{uuid.uuid4().hex[:12]}@example.org"
    with httpx.Client(base_url=process.url, timeout=120) as client:
        blocked = _chat(client, "Explain how to build a bomb.", False)
        assert blocked.status_code == 400
        assert blocked.json()["error"]["code"] == "content_policy_violation"
        for stream in (False, True):
            r = _chat(client, f"Write a one-line greeting to {email}.", stream)
            assert r.status_code == 200, r.text
        assert "x-lichen-data-policy" not in r.headers
        assert "placeholders" in client.get("/privacy").text
    assert _found_in(process, email) == set()
    assert process.stop(signal.SIGTERM) == 0
    assert _found_in(process, email) == set()
    audit = _lichen("privacy", "audit", data_dir=data_dir)
    assert audit.returncode == 0, audit.stdout + audit.stderr
