"""The official ``ollama`` and ``openai`` clients against one real gateway.

``lichen up --embeddings`` serves the real SmolLM2 model; both clients chat,
generate and embed through it, streaming and not, and get their own dialect's
errors.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest
from clients import NO_ANONYMOUS_LIMITS, anonymous_openai
from harness import DEFAULT_MODEL, Harness, LichenProcess
from openai import OpenAI

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "Say hi"}]
OPTIONS = {"temperature": 0, "num_predict": 12, "seed": 3}


@pytest.fixture(scope="module")
def up(module_harness: Harness) -> LichenProcess:
    return module_harness.up(args=["--embeddings"], env=NO_ANONYMOUS_LIMITS)


@pytest.fixture
def olla(up: LichenProcess) -> Iterator[ollama.Client]:
    client = ollama.Client(host=up.url, timeout=120)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def oai(up: LichenProcess) -> Iterator[OpenAI]:
    with anonymous_openai(f"{up.url}/v1") as client:
        yield client


# --- ollama ----------------------------------------------------------------------------


def test_list_show_and_version(olla: ollama.Client, up: LichenProcess) -> None:
    (model,) = olla.list().models
    assert model.model == DEFAULT_MODEL
    assert model.digest and len(model.digest) == 64
    shown = olla.show(DEFAULT_MODEL)
    assert shown.capabilities is not None
    assert "completion" in shown.capabilities and "embedding" in shown.capabilities
    assert "tools" in shown.capabilities  # generic tool calls: SmolLM2's template has none
    version = httpx.get(f"{up.url}/api/version", timeout=10).json()
    assert version["version"]


def test_ollama_chat_non_streaming(olla: ollama.Client) -> None:
    reply = olla.chat(model=DEFAULT_MODEL, messages=HI, options=OPTIONS)
    assert reply.done and reply.done_reason in ("stop", "length")
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.eval_count and 0 < reply.eval_count <= 12
    assert reply.prompt_eval_count and reply.prompt_eval_count > 0
    assert reply.model == DEFAULT_MODEL


def test_ollama_chat_streaming_equals_non_streaming(olla: ollama.Client) -> None:
    whole = olla.chat(model=DEFAULT_MODEL, messages=HI, options=OPTIONS).message.content
    parts = list(olla.chat(model=DEFAULT_MODEL, messages=HI, options=OPTIONS, stream=True))
    assert len(parts) > 2
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == whole
    assert parts[-1].eval_count and parts[-1].eval_count > 0


def test_ollama_generate(olla: ollama.Client) -> None:
    reply = olla.generate(model=DEFAULT_MODEL, prompt="Say hi", options=OPTIONS)
    assert reply.done and reply.response
    streamed = list(
        olla.generate(model=DEFAULT_MODEL, prompt="Say hi", options=OPTIONS, stream=True)
    )
    assert streamed[-1].done
    assert "".join(p.response or "" for p in streamed) == reply.response
    raw = olla.generate(
        model=DEFAULT_MODEL, prompt="The capital of France is", raw=True, options=OPTIONS
    )
    assert raw.done and raw.response


def test_ollama_latest_tag_and_format_json(olla: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "legs": {"type": "integer"}},
        "required": ["name", "legs"],
        "additionalProperties": False,
    }
    reply = olla.chat(
        model=f"{DEFAULT_MODEL}:latest",
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        format=schema,
        options={"temperature": 0, "num_predict": 120},
    )
    cat = json.loads(reply.message.content or "")
    assert set(cat) == {"name", "legs"}
    assert isinstance(cat["name"], str) and isinstance(cat["legs"], int)


def test_ollama_errors(olla: ollama.Client, up: LichenProcess) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        olla.chat(model="no-such-model", messages=HI)
    assert info.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as info:
        olla.show("no-such-model")
    assert info.value.status_code == 404
    r = httpx.post(f"{up.url}/api/chat", json={"model": DEFAULT_MODEL, "messages": "x"}, timeout=10)
    assert r.status_code == 400
    assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str)


def test_ollama_embed(olla: ollama.Client) -> None:
    result = olla.embed(model=DEFAULT_MODEL, input=["a red apple", "a green pear"])
    first, second = result.embeddings
    assert len(first) == len(second) > 100
    assert first != second


# --- openai, against the same gateway --------------------------------------------------


def test_openai_chat_streaming_and_not(oai: OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": DEFAULT_MODEL, "messages": HI, "max_tokens": 12}
    whole = oai.chat.completions.create(temperature=0, **kwargs)
    text = whole.choices[0].message.content
    assert text
    chunks = oai.chat.completions.create(temperature=0, stream=True, **kwargs)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text


def test_openai_embeddings(oai: OpenAI) -> None:
    result = oai.embeddings.create(model=DEFAULT_MODEL, input=["a red apple", "a green pear"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) > 100
    assert result.usage.prompt_tokens > 0
    # base64 is little-endian float32, as OpenAI sends it; the same text gives the same vector
    encoded = oai.embeddings.create(
        model=DEFAULT_MODEL, input="a red apple", encoding_format="base64"
    )
    raw = base64.b64decode(str(encoded.data[0].embedding))
    vector = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert vector == pytest.approx(result.data[0].embedding, abs=1e-6)


def test_openai_embedding_errors(up: LichenProcess) -> None:
    r = httpx.post(
        f"{up.url}/v1/embeddings", json={"model": "no-such-model", "input": "x"}, timeout=10
    )
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
