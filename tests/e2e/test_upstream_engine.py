"""A node whose ``openai`` engine serves a second, independent llama.cpp server.

The upstream is xllamacpp's own HTTP server (llama-server), started here in the
test process with an API key. The key reaches ``lichen up`` only through the
encrypted secret store (``lichen secret set``, value on stdin). The node serves
the upstream's model beside its local one; answers through the network match
what the upstream says directly, streaming and not, usage included; and once
the upstream is stopped its model leaves ``/v1/models`` within seconds while the
local model stays.
"""

from __future__ import annotations

import gc
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from clients import NO_ANONYMOUS_LIMITS, anonymous_openai
from harness import DEFAULT_MODEL, Harness, LichenProcess, lichen_argv, scrubbed_env
from openai import OpenAI

pytestmark = pytest.mark.e2e

UPSTREAM_MODEL = "upstream-smol"
SECRET_NAME = "upstream-key"
QUESTION = [{"role": "user", "content": "Name three colours."}]


class Upstream:
    """xllamacpp's llama-server in this process, on a loopback port, locked with a key."""

    def __init__(self, model_path: Path, api_key: str) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(model_path)
        params.model_alias = {UPSTREAM_MODEL}
        params.n_parallel = 2
        params.n_ctx = 2048
        params.cpuparams.n_threads = 1
        params.cpuparams_batch.n_threads = 1
        params.warmup = False
        params.verbosity = -1
        params.api_keys = [api_key]
        self.server: Any = xllamacpp.Server(params)
        self.url: str = self.server.listening_address
        self.api_key = api_key

    def stop(self) -> None:
        """Dropping the last reference stops llama-server and closes its port."""
        self.server = None
        gc.collect()


@pytest.fixture(scope="module")
def upstream(models_dir: Path) -> Iterator[Upstream]:
    (gguf,) = (models_dir / DEFAULT_MODEL).glob("*.gguf")
    server = Upstream(gguf, api_key="sk-" + secrets.token_hex(16))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def node(module_harness: Harness, upstream: Upstream) -> LichenProcess:
    data_dir = module_harness.root / "up" / "data"
    stored = subprocess.run(
        [*lichen_argv(), "secret", "set", SECRET_NAME, "--data-dir", str(data_dir)],
        input=upstream.api_key.encode(),
        env=scrubbed_env({"LICHEN_DATA_DIR": str(data_dir)}),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert stored.returncode == 0, stored.stderr.decode()
    assert upstream.api_key.encode() not in stored.stdout + stored.stderr
    up = module_harness.up(
        args=["--upstream", upstream.url, "--upstream-key-secret", SECRET_NAME],
        env={"LICHEN_UPSTREAM_REFRESH_S": "0.5", "LICHEN_PARALLEL": "2"} | NO_ANONYMOUS_LIMITS,
    )
    _wait_for(lambda: UPSTREAM_MODEL in _listed(up), what="the upstream's model to be listed")
    return up


@pytest.fixture
def client(node: LichenProcess) -> Iterator[OpenAI]:
    with anonymous_openai(f"{node.url}/v1") as c:
        yield c


@pytest.fixture
def direct(upstream: Upstream) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{upstream.url}/v1", api_key=upstream.api_key, max_retries=0) as c:
        yield c


def _listed(up: LichenProcess) -> list[str]:
    return [m["id"] for m in httpx.get(f"{up.url}/v1/models", timeout=10).json()["data"]]


def _wait_for(predicate: Any, *, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _ask(client: OpenAI, **extra: Any) -> Any:
    return client.chat.completions.create(
        model=UPSTREAM_MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=16,
        temperature=0,
        seed=1,
        **extra,
    )


def test_both_models_are_served(node: LichenProcess) -> None:
    assert sorted(_listed(node)) == sorted([DEFAULT_MODEL, UPSTREAM_MODEL])
    log = node.logs()
    assert "upstream" in log


def test_non_streaming_matches_the_upstream_with_its_usage(client: OpenAI, direct: OpenAI) -> None:
    expected = _ask(direct)
    reply = _ask(client)
    assert reply.model == UPSTREAM_MODEL
    assert reply.choices[0].message.content == expected.choices[0].message.content
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == expected.choices[0].finish_reason
    assert reply.usage is not None and expected.usage is not None
    assert reply.usage.prompt_tokens == expected.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens == expected.usage.completion_tokens > 0


def test_streaming_matches_with_usage(client: OpenAI, direct: OpenAI) -> None:
    expected = _ask(direct)
    stream = _ask(client, stream=True, stream_options={"include_usage": True})
    parts: list[str] = []
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(parts) == expected.choices[0].message.content
    assert usage is not None and expected.usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        expected.usage.prompt_tokens,
        expected.usage.completion_tokens,
    )


def test_the_local_model_still_answers(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=QUESTION,
        max_tokens=8,
        temperature=0,  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content


def test_the_key_is_encrypted_at_rest(node: LichenProcess, upstream: Upstream) -> None:
    assert node.data_dir is not None
    store = node.data_dir / "secrets.json"
    assert store.stat().st_mode & 0o777 == 0o600
    assert upstream.api_key.encode() not in store.read_bytes()
    assert upstream.api_key.encode() not in node.log_bytes()


def test_stopping_the_upstream_withdraws_its_model(
    node: LichenProcess, upstream: Upstream, client: OpenAI
) -> None:
    upstream.stop()
    _wait_for(lambda: UPSTREAM_MODEL not in _listed(node), what="withdrawal", timeout=15)
    assert _listed(node) == [DEFAULT_MODEL]
    r = httpx.post(
        f"{node.url}/v1/chat/completions",
        json={"model": UPSTREAM_MODEL, "messages": QUESTION},
        timeout=30,
    )
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "model_not_found"
