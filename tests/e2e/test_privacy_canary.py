"""Privacy canary: prompt and completion text leave no trace on disk or in the logs.

A unique string goes into chat and completion prompts, streamed and not. Afterwards
neither it nor a distinctive piece of what the model answered may appear in any
file under the data dir (keys, config, the SQLite database and its WAL, read as
bytes) or in the process's stdout/stderr, logged at DEBUG to make this strict.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import httpx
import pytest
from harness import DEFAULT_MODEL, Harness, LichenProcess

pytestmark = pytest.mark.e2e


def _needles(text: str) -> list[bytes]:
    """The text as it could be stored: UTF-8, UTF-16 (SQLite can), JSON-escaped."""
    return [
        text.encode("utf-8"),
        text.encode("utf-16-le"),
        text.encode("utf-16-be"),
        text.encode("unicode_escape"),
    ]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _leaks(process: LichenProcess, secrets: dict[str, str]) -> list[str]:
    assert process.data_dir is not None
    found = []
    haystacks = {str(p): p.read_bytes() for p in _files(process.data_dir)}
    haystacks["stdout+stderr"] = process.log_bytes()
    for label, secret in secrets.items():
        for where, data in haystacks.items():
            if any(needle in data for needle in _needles(secret)):
                found.append(f"{label} found in {where}")
    return found


def _distinctive(answer: str) -> str:
    """The longest line of the answer, trimmed: specific enough to be a real leak."""
    line = max((s.strip() for s in answer.splitlines()), key=len)
    return line[:60]


def test_prompts_and_completions_never_reach_disk_or_logs(harness: Harness) -> None:
    process = harness.up("canary", env={"LICHEN_LOG_LEVEL": "DEBUG"})
    canary = f"canary-{uuid.uuid4()}"
    prompt = f"My secret code word is {canary}. Write one sentence about a red bicycle."
    answers: list[str] = []
    with httpx.Client(base_url=process.url, timeout=120) as client:
        for stream in (False, True):
            chat = {
                "model": DEFAULT_MODEL,
                "messages": [
                    {"role": "system", "content": f"Remember {canary}."},
                    {"role": "user", "content": prompt},
                ],
                "max_tokens": 40,
                "temperature": 0,
                "stream": stream,
            }
            completion = {
                "model": DEFAULT_MODEL,
                "prompt": f"The secret code word is {canary}. Once upon a time, a red bicycle",
                "max_tokens": 40,
                "temperature": 0,
                "stream": stream,
            }
            for path, body in (("/v1/chat/completions", chat), ("/v1/completions", completion)):
                r = client.post(path, json=body)
                assert r.status_code == 200, r.text
                if not stream:
                    choice = r.json()["choices"][0]
                    answers.append(choice.get("message", {}).get("content") or choice["text"])
                else:
                    assert r.text.rstrip().endswith("data: [DONE]")
        # An error path too: a bad parameter next to the canary.
        bad = {"model": DEFAULT_MODEL, "prompt": canary, "temperature": 9}
        assert client.post("/v1/completions", json=bad).status_code == 400

    secrets = {"canary": canary}
    for i, answer in enumerate(answers):
        piece = _distinctive(answer)
        assert len(piece) >= 12, f"answer {i} too short to check: {answer!r}"
        secrets[f"answer {i} ({piece!r})"] = piece

    # While running (the WAL holds the newest writes) and after a clean stop.
    assert _leaks(process, secrets) == []
    assert process.stop(signal.SIGTERM) == 0
    assert _leaks(process, secrets) == []
    assert process.data_dir is not None
    names = {p.name for p in _files(process.data_dir)}
    assert any(name.startswith("lichen.db") for name in names), names  # it did store metadata
    assert "DEBUG" in process.logs()  # the strict level really was on
