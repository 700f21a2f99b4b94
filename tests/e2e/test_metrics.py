"""``GET /metrics`` of ``lichen up``: Prometheus text with gateway, tracker and node metrics.

After canary requests through both API dialects the exposition parses with
``prometheus_client``'s own parser, counts what happened, and contains neither
the prompt, the answer, the client's address nor a raw request path.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from clients import NO_ANONYMOUS_LIMITS, anonymous_openai
from harness import DEFAULT_MODEL, Harness, HttpReady, LichenProcess, lichen_argv, scrubbed_env
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

pytestmark = pytest.mark.e2e

CANARY = "zebra-canary-5417 lives on Mount Qwerty"
ALLOWED_LABELS = {"route", "method", "status", "kind", "direction", "model", "outcome", "le"}


@pytest.fixture(scope="module")
def up(module_harness: Harness) -> LichenProcess:
    return module_harness.up(env=NO_ANONYMOUS_LIMITS)


@pytest.fixture(scope="module")
def traffic(up: LichenProcess) -> Iterator[dict[str, int]]:
    """Canary requests: OpenAI non-streaming and streaming, Ollama, and a 404 path."""
    prompt = [{"role": "user", "content": f"Repeat after me: {CANARY}"}]
    out = 0
    answers: list[str] = []
    with anonymous_openai(f"{up.url}/v1") as client:
        reply = client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=prompt,
            max_tokens=24,
            temperature=0,  # type: ignore[arg-type]
        )
        assert reply.usage is not None
        out += reply.usage.completion_tokens
        answers.append(reply.choices[0].message.content or "")
        stream = client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=prompt,  # type: ignore[arg-type]
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts = []
        for chunk in stream:
            parts.extend(c.delta.content or "" for c in chunk.choices)
            if chunk.usage is not None:
                out += chunk.usage.completion_tokens
        answers.append("".join(parts))
    with httpx.Client(base_url=up.url, timeout=120) as http:
        r = http.post(
            "/api/chat",
            json={
                "model": DEFAULT_MODEL,
                "messages": prompt,
                "stream": False,
                "options": {"num_predict": 24, "temperature": 0},
            },
        )
        assert r.status_code == 200, r.text
        out += r.json()["eval_count"]
        answers.append(r.json()["message"]["content"])
        assert http.get(f"/v1/{CANARY.replace(' ', '-')}").status_code == 404
    assert all(answers)
    yield {"completion_tokens": out, "answers": len(answers)}


@pytest.fixture(scope="module")
def exposition(up: LichenProcess, traffic: dict[str, int]) -> str:
    r = httpx.get(f"{up.url}/metrics", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def _samples(text: str, family: str) -> list[Sample]:
    for metric in text_string_to_metric_families(text):
        if metric.name == family:
            return list(metric.samples)
    raise AssertionError(f"no metric family {family!r}")


def _value(text: str, sample_name: str, **labels: str) -> float:
    family = sample_name.removesuffix("_total").removesuffix("_count")
    return sum(
        s.value
        for s in _samples(text, family)
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_the_exposition_parses_and_has_every_role(exposition: str) -> None:
    names = {m.name for m in text_string_to_metric_families(exposition)}
    for family in (
        "lichen_gateway_requests",
        "lichen_gateway_request_duration_seconds",
        "lichen_gateway_time_to_first_token_seconds",
        "lichen_gateway_tokens",
        "lichen_tracker_nodes_connected",
        "lichen_tracker_jobs_in_flight",
        "lichen_tracker_queue_depth",
        "lichen_node_jobs",
        "lichen_node_tokens",
        "lichen_node_tokens_per_second",
        "lichen_node_engine_queue_depth",
    ):
        assert family in names, family


def test_the_numbers_follow_the_traffic(exposition: str, traffic: dict[str, int]) -> None:
    chat = "/v1/chat/completions"
    assert _value(exposition, "lichen_gateway_requests_total", route=chat, status="200") == 2
    assert _value(exposition, "lichen_gateway_requests_total", route="/api/chat") == 1
    assert _value(exposition, "lichen_gateway_requests_total", route="other", status="404") == 1
    assert _value(exposition, "lichen_gateway_request_duration_seconds_count", route=chat) == 2
    assert _value(exposition, "lichen_gateway_time_to_first_token_seconds_count") == 3
    out = _value(exposition, "lichen_gateway_tokens_total", direction="out", model=DEFAULT_MODEL)
    assert out == traffic["completion_tokens"]
    assert _value(exposition, "lichen_gateway_tokens_total", direction="in") > 0
    assert _value(exposition, "lichen_tracker_nodes_connected") == 1
    assert _value(exposition, "lichen_tracker_jobs_in_flight") == 0
    assert _value(exposition, "lichen_node_jobs_total", outcome="ok") == 3
    assert _value(exposition, "lichen_node_tokens_total", direction="out") == out
    assert _value(exposition, "lichen_node_tokens_per_second") > 0


def test_no_content_address_or_raw_path_in_the_metrics(exposition: str) -> None:
    for word in CANARY.split():
        if len(word) > 4:
            assert word not in exposition
    assert "127.0.0.1" not in exposition
    assert "Mount" not in exposition
    for metric in text_string_to_metric_families(exposition):
        for sample in metric.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, sample
            assert "canary" not in sample.labels.get("route", ""), sample  # templates only


# --- standalone roles: `lichen tracker` and `lichen node --metrics-port` ---------------------


def _gauge(url: str, name: str) -> float:
    text = httpx.get(url, timeout=10).text
    return sum(s.value for s in _samples(text, name) if s.name == name)


def test_standalone_tracker_and_node_expose_their_metrics(module_harness: Harness) -> None:
    h = module_harness
    tracker = h.start(
        "tracker",
        # public networks gate /metrics by default; this test reads it without the token
        [
            "tracker",
            "--public",
            "--operator-surfaces",
            "open",
            "--port",
            "{port}",
            "--data-dir",
            "{data_dir}",
        ],
        ready=HttpReady("/metrics"),  # /health is 503 until a node serves a model
    )
    assert tracker.data_dir is not None
    invite = subprocess.run(
        [*lichen_argv(), "invite", "create", "--data-dir", str(tracker.data_dir)],
        env=scrubbed_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    node = h.start(
        "node",
        ["node", "--join", invite, "--data-dir", "{data_dir}", "--metrics-port", "{port}"],
        env={"LICHEN_PARALLEL": "2", "LICHEN_CTX_SIZE": "2048"},
        ready=HttpReady("/metrics"),
    )
    deadline = time.monotonic() + 60
    while _gauge(f"{tracker.url}/metrics", "lichen_tracker_nodes_connected") < 1:
        assert time.monotonic() < deadline, tracker.tail()
        time.sleep(0.2)
    assert _gauge(f"{node.url}/metrics", "lichen_node_models") == 1
    assert _gauge(f"{node.url}/metrics", "lichen_node_free_slots") == 2
    r = httpx.post(
        f"{tracker.url}/v1/chat/completions",
        json={"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": CANARY}],
              "max_tokens": 8},
        timeout=120,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    node_text = httpx.get(f"{node.url}/metrics", timeout=10).text
    assert _value(node_text, "lichen_node_jobs_total", outcome="ok") == 1
    assert "zebra" not in node_text
    tracker_text = httpx.get(f"{tracker.url}/metrics", timeout=10).text
    assert _value(tracker_text, "lichen_gateway_requests_total", status="200") >= 1
    assert "zebra" not in tracker_text
