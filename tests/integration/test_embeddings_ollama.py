"""Embeddings over the wire, Ollama shapes, and re-sent manifests, in-process with fake engines."""

from __future__ import annotations

import json
from typing import Any

from fakes import ANSWER, MODEL, FakeEngine, LocalNetwork, eventually

from lichen.engines.base import Embeddings
from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import generate_key
from lichen.wire.manifest import sign_manifest
from lichen.wire.messages import EmbeddingRequest, ModelInfo, Usage
from lichen.wire.vectors import pack_vector

EMBEDDER = "fake-embedder"


class FakeEmbedder(FakeEngine):
    """A fake engine whose model also embeds: vector i is [len(text), i, 0.5]."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__(model=EMBEDDER)
        self.fail = fail
        self.embedded: list[EmbeddingRequest] = []

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(name=EMBEDDER, sha256="1" * 64, engine="fake", embeddings=True)]

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        self.embedded.append(request)
        if self.fail:
            raise LichenError(ErrorCode.NODE_FAILED, "scripted embedding failure")
        vectors = [
            pack_vector([float(len(t)), float(i), 0.5]) for i, t in enumerate(request.inputs)
        ]
        return Embeddings(vectors, Usage(sum(len(t) for t in request.inputs), 0))


# --- /v1/embeddings ------------------------------------------------------------------


async def test_embeddings_are_routed_to_a_capable_node(net: LocalNetwork) -> None:
    await net.add_node(FakeEngine(), "chat-only")
    embedder = FakeEmbedder()
    await net.add_node(embedder, "embedder")
    r = await net.client.post("/v1/embeddings", json={"model": EMBEDDER, "input": ["ab", "cde"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["embedding"] for d in body["data"]] == [[2.0, 0.0, 0.5], [3.0, 1.0, 0.5]]
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert body["model"] == EMBEDDER
    r = await net.client.post("/api/embed", json={"model": EMBEDDER, "input": "ab"})
    assert r.status_code == 200 and r.json()["embeddings"] == [[2.0, 0.0, 0.5]]
    r = await net.client.post("/api/embeddings", json={"model": EMBEDDER, "prompt": "abcd"})
    assert r.status_code == 200 and r.json() == {"embedding": [4.0, 0.0, 0.5]}
    # auto picks the embedding model, not the chat-only one
    r = await net.client.post("/v1/embeddings", json={"model": "auto", "input": "x"})
    assert r.status_code == 200 and r.json()["model"] == EMBEDDER


async def test_embedding_errors(net: LocalNetwork) -> None:
    await net.add_node(FakeEngine(), "chat-only")
    r = await net.client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = await net.client.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = await net.client.post("/v1/embeddings", json={"model": "auto", "input": "x"})
    assert r.status_code == 404
    r = await net.client.post("/v1/embeddings", json={"model": MODEL, "input": [""]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"


async def test_embeddings_fail_over_to_another_node(net: LocalNetwork) -> None:
    bad, good = FakeEmbedder(fail=True), FakeEmbedder()
    await net.add_node(bad, "bad")
    await net.add_node(good, "good")
    for _ in range(3):  # whichever is tried first, the answer comes from the good one
        r = await net.client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "abc"})
        assert r.status_code == 200, r.text
    assert len(good.embedded) == 3


# --- Ollama shapes ---------------------------------------------------------------------


def _lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


async def test_ollama_chat_ndjson_and_options(net: LocalNetwork) -> None:
    engine = FakeEngine()
    await net.add_node(engine, "n1")
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "options": {"temperature": 0.2, "top_p": 0.9, "num_predict": 50, "stop": ["\n"], "seed": 4},
        "format": "json",
    }
    r = await net.client.post("/api/chat", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = _lines(r.content)
    assert "".join(x["message"]["content"] for x in lines) == "".join(ANSWER)
    assert [x["done"] for x in lines] == [False] * len(ANSWER) + [True]
    assert lines[-1]["done_reason"] == "stop" and lines[-1]["eval_count"] == len(ANSWER)
    (wire,) = engine.requests
    p = wire.params
    assert (p.temperature, p.top_p, p.max_tokens, p.stop, p.seed) == (0.2, 0.9, 50, ["\n"], 4)
    assert json.loads(p.response_format or "") == {"type": "json_object"}


async def test_ollama_generate_non_streaming_and_system(net: LocalNetwork) -> None:
    engine = FakeEngine()
    await net.add_node(engine, "n1")
    r = await net.client.post(
        "/api/generate",
        json={"model": MODEL, "prompt": "hi", "system": "be kind", "stream": False},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["response"] == "".join(ANSWER) and body["done"] is True
    (wire,) = engine.requests
    assert [m.role for m in wire.messages] == ["system", "user"]
    r = await net.client.post(
        "/api/generate", json={"model": MODEL, "prompt": "raw text", "raw": True, "stream": False}
    )
    assert engine.requests[-1].kind == "completion" and engine.requests[-1].prompt == "raw text"


async def test_ollama_errors_before_and_during_the_stream(net: LocalNetwork) -> None:
    await net.add_node(FakeEngine(fail_after=2), "flaky")
    r = await net.client.post("/api/chat", json={"model": "nope", "messages": []})
    assert r.status_code == 404 and set(r.json()) == {"error"}
    r = await net.client.post("/api/chat", json={"model": MODEL, "messages": [{"role": "x"}]})
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    r = await net.client.post("/api/chat", json={"model": MODEL, "tools": [{}], "messages": []})
    assert r.status_code == 400  # the fake model has no tool support
    r = await net.client.post(
        "/api/chat", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    )
    lines = _lines(r.content)
    assert r.status_code == 200 and "error" in lines[-1]  # failed after two tokens, nowhere to go


# --- manifests re-sent after the first ---------------------------------------------------


async def test_a_re_sent_manifest_signed_by_another_key_closes_the_link(net: LocalNetwork) -> None:
    node = await net.add_node(FakeEngine(), "n1")
    link = node.agent._link
    assert link is not None
    forged = sign_manifest(
        generate_key(),
        name="n1",
        peer_id=node.peer_id,
        models=[ModelInfo(name="stolen", sha256="", engine="x")],
        engines=["x"],
    )
    await link.send(forged)
    await eventually(lambda: node.agent.fatal is not None, what="the node to be refused")
    assert node.agent.fatal is not None
    assert node.agent.fatal.code is ErrorCode.MANIFEST_INVALID
    assert "stolen" not in net.tracker.registry.model_counts()
