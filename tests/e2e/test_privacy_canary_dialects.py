"""Privacy canary for the newer dialects: OpenAI Responses, Anthropic Messages, Ollama
and embeddings under the default ``private`` policy leave no trace on disk or in logs,
and a request to keep a response (``store``) is refused there."""

from __future__ import annotations

import signal
import uuid

import httpx
import pytest
from harness import DEFAULT_MODEL, Harness
from test_privacy_canary import _distinctive, _leaks

pytestmark = pytest.mark.e2e


def test_new_routes_keep_nothing_under_private(harness: Harness) -> None:
    process = harness.up(
        "canary-dialects", args=["--embeddings"], env={"LICHEN_LOG_LEVEL": "DEBUG"}
    )
    canary = f"canary-{uuid.uuid4()}"
    prompt = f"My secret code word is {canary}. Write one sentence about a red bicycle."
    answers: list[str] = []
    with httpx.Client(base_url=process.url, timeout=120) as client:
        for stream in (False, True):
            responses = {
                "model": DEFAULT_MODEL,
                "instructions": f"Remember {canary}.",
                "input": prompt,
                "max_output_tokens": 40,
                "temperature": 0,
                "stream": stream,
            }
            messages = {
                "model": DEFAULT_MODEL,
                "system": f"Remember {canary}.",
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 40,
                "temperature": 0,
                "stream": stream,
            }
            ollama = {
                "model": DEFAULT_MODEL,
                "messages": [{"role": "user", "content": prompt}],
                "options": {"temperature": 0, "num_predict": 40},
                "stream": stream,
            }
            for path, body in (
                ("/v1/responses", responses),
                ("/v1/messages", messages),
                ("/api/chat", ollama),
            ):
                r = client.post(path, json=body)
                assert r.status_code == 200, r.text
                if stream:
                    continue
                payload = r.json()
                if path == "/v1/responses":
                    answers.append(payload["output"][0]["content"][0]["text"])
                elif path == "/v1/messages":
                    answers.append(payload["content"][0]["text"])
                else:
                    answers.append(payload["message"]["content"])
        embedded = client.post("/v1/embeddings", json={"model": DEFAULT_MODEL, "input": prompt})
        assert embedded.status_code == 200, embedded.text
        kept = client.post(
            "/v1/responses", json={"model": DEFAULT_MODEL, "input": canary, "store": True}
        )
        assert kept.status_code == 400 and kept.json()["error"]["param"] == "store"

    secrets = {"canary": canary}
    for i, answer in enumerate(answers):
        piece = _distinctive(answer)
        assert len(piece) >= 12, f"answer {i} too short to check: {answer!r}"
        secrets[f"answer {i} ({piece!r})"] = piece
    assert _leaks(process, secrets) == []
    assert process.stop(signal.SIGTERM) == 0
    assert _leaks(process, secrets) == []
