"""The one answer path: settled on every exit, one deadline and one validation for all."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakes import ANSWER, MODEL, FakeEngine, LocalNetwork, eventually

from lichen.engines.base import Embeddings
from lichen.gateway.completions import Outcome
from lichen.wire.messages import EmbeddingRequest, ModelInfo, Usage
from lichen.wire.vectors import pack_vector


@pytest.fixture
def net_options() -> dict[str, Any]:
    return {"timeout_s": 2.0}


@pytest.fixture
def settled(net: LocalNetwork) -> list[Outcome]:
    outcomes: list[Outcome] = []

    async def settle(outcome: Outcome) -> None:
        outcomes.append(outcome)

    net.completions.settle = settle
    return outcomes


STREAMS = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "stream": True}),
    ("/v1/completions", {"prompt": "x", "stream": True}),
    ("/v1/responses", {"input": "x", "stream": True}),
    (
        "/v1/messages",
        {"max_tokens": 64, "messages": [{"role": "user", "content": "x"}], "stream": True},
    ),
    ("/api/chat", {"messages": [{"role": "user", "content": "x"}]}),
    ("/api/generate", {"prompt": "x"}),
]


@pytest.mark.parametrize(("path", "body"), STREAMS)
async def test_a_stream_left_early_is_settled_for_what_was_sent(
    net: LocalNetwork, settled: list[Outcome], path: str, body: dict[str, Any]
) -> None:
    engine = FakeEngine(delay_s=0.05)
    await net.add_node(engine, "n1")
    async with net.client.stream("POST", path, json={"model": MODEL} | body) as response:
        assert response.status_code == 200
        seen = ""
        async for line in response.aiter_lines():
            seen += line
            if ANSWER[3] in seen:  # four tokens in: the client leaves
                break
    await eventually(lambda: len(settled) == 1, what="the abandoned stream to be settled")
    await eventually(lambda: engine.cancelled + engine.finished == 1, what="the job to end")
    (outcome,) = settled
    assert outcome.streamed_tokens >= 4
    assert outcome.completion_text.startswith("".join(ANSWER[:4]))
    assert "".join(ANSWER[:4]) not in repr(outcome)  # kept in memory, never in a repr


async def test_a_finished_stream_is_settled_once_with_its_usage(
    net: LocalNetwork, settled: list[Outcome]
) -> None:
    await net.add_node(FakeEngine(), "n1")
    body = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "x"}]}
    r = await net.client.post("/v1/messages", json=body | {"stream": True})
    assert r.status_code == 200
    await eventually(lambda: len(settled) == 1, what="settlement")
    (outcome,) = settled
    assert (outcome.usage.completion_tokens, outcome.streamed_tokens) == (8, 8)
    assert outcome.completion_text == "".join(ANSWER)


async def test_ollama_ndjson_stream_has_the_deadline(
    net: LocalNetwork, settled: list[Outcome]
) -> None:
    engine = FakeEngine(fail_after=2, failure="stall")
    await net.add_node(engine, "n1")
    r = await net.client.post(
        "/api/chat", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    )
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [line["message"]["content"] for line in lines[:-1]] == ANSWER[:2]
    assert "timed out" in lines[-1]["error"]
    await eventually(lambda: engine.cancelled == 1, what="the stalled job to be cancelled")
    (outcome,) = settled
    assert outcome.status == 504 and outcome.streamed_tokens == 2


@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "seed": 2**40},
            "openai",
        ),
        (
            "/api/chat",
            {"messages": [{"role": "user", "content": "x"}], "options": {"seed": 2**40}},
            "ollama",
        ),
        (
            "/api/generate",
            {"prompt": "x", "options": {"stop": ["a", "b", "c", "d", "e"]}},
            "ollama",
        ),
        (
            "/api/chat",
            {"messages": [{"role": "user", "content": "x"}], "options": {"num_predict": 2**62}},
            "ollama",
        ),
        (
            "/v1/messages",
            {"max_tokens": 2**40, "messages": [{"role": "user", "content": "x"}]},
            "anthropic",
        ),
        ("/v1/responses", {"input": "x", "max_output_tokens": 2**40}, "openai"),
    ],
)
async def test_every_dialect_gets_the_same_validation_in_its_own_shape(
    net: LocalNetwork, path: str, body: dict[str, Any], shape: str
) -> None:
    engine = FakeEngine()
    await net.add_node(engine, "n1")
    r = await net.client.post(path, json={"model": MODEL} | body)
    assert r.status_code == 400, r.text
    payload = r.json()
    if shape == "openai":
        assert payload["error"]["type"] == "invalid_request_error"
    elif shape == "ollama":
        assert set(payload) == {"error"} and isinstance(payload["error"], str)
    else:
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "invalid_request_error"
    assert engine.requests == []


class Embedder(FakeEngine):
    def models(self) -> list[ModelInfo]:
        return [ModelInfo(name=MODEL, sha256="1" * 64, engine="fake", embeddings=True)]

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        vectors = [pack_vector([1.0, 0.0]) for _ in request.inputs]
        return Embeddings(vectors, Usage(3 * len(request.inputs), 0))


async def test_embeddings_are_settled(net: LocalNetwork, settled: list[Outcome]) -> None:
    await net.add_node(Embedder(), "embedder")
    r = await net.client.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "b"]})
    assert r.status_code == 200, r.text
    r = await net.client.post("/api/embed", json={"model": MODEL, "input": "c"})
    assert r.status_code == 200, r.text
    assert [(o.kind, o.usage.prompt_tokens, o.status) for o in settled] == [
        ("embedding", 6, 200),
        ("embedding", 3, 200),
    ]
    assert all(o.node == net.nodes[0].peer_id for o in settled)
