"""The gateway in-process on loopback: real tracker, real wire, real node agents, fake engines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes import (
    ANSWER,
    MODEL,
    FakeEngine,
    LocalNetwork,
    assert_openai_error,
    eventually,
    sse_payloads,
    streamed_text,
)

from lichen.gateway.completions import NODE_HEADER

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TEXT = "".join(ANSWER)


def chat_body(**changes: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}]} | changes


def completion_body(**changes: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "Once upon a time"} | changes


@pytest.fixture
def net_options() -> dict[str, Any]:
    return {"max_request_bytes": 4096}


@pytest.fixture
async def engine(net: LocalNetwork) -> FakeEngine:
    engine = FakeEngine()
    await net.add_node(engine, "n1")
    return engine


# --- happy paths ---------------------------------------------------------------------


async def test_chat_non_streaming(net: LocalNetwork, engine: FakeEngine) -> None:
    r = await net.client.post(
        CHAT, json=chat_body(temperature=0, top_p=0.5, stop=["\n"], seed=3, user="u1")
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": TEXT}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}
    assert r.headers[NODE_HEADER] == net.nodes[0].peer_id
    # the node received exactly the typed request
    (wire,) = engine.requests
    assert wire.kind == "chat" and wire.messages[0].content == "Say hi"
    assert (wire.params.temperature, wire.params.top_p, wire.params.stop, wire.params.seed) == (
        0,
        0.5,
        ["\n"],
        3,
    )


async def test_chat_streaming_with_usage(net: LocalNetwork, engine: FakeEngine) -> None:
    r = await net.client.post(
        CHAT, json=chat_body(stream=True, stream_options={"include_usage": True})
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(r.text)
    assert {p["object"] for p in payloads} == {"chat.completion.chunk"}
    assert len({p["id"] for p in payloads}) == 1
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert streamed_text(payloads) == TEXT
    content_chunks = [
        p for p in payloads if p["choices"] and p["choices"][0]["delta"].get("content")
    ]
    assert len(content_chunks) == len(ANSWER)
    finish = [p["choices"][0]["finish_reason"] for p in payloads if p["choices"]]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    last = payloads[-1]
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}
    assert all("usage" not in p for p in payloads[:-1])


async def test_chat_streaming_without_usage(net: LocalNetwork, engine: FakeEngine) -> None:
    r = await net.client.post(CHAT, json=chat_body(stream=True))
    payloads = sse_payloads(r.text)
    assert streamed_text(payloads) == TEXT
    assert all("usage" not in p for p in payloads)


async def test_max_tokens_ends_by_length(net: LocalNetwork, engine: FakeEngine) -> None:
    r = await net.client.post(CHAT, json=chat_body(max_tokens=3))
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "".join(ANSWER[:3])
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    r = await net.client.post(CHAT, json=chat_body(max_completion_tokens=2, max_tokens=5))
    assert r.json()["usage"]["completion_tokens"] == 2  # the newer name wins


async def test_completions_non_streaming(net: LocalNetwork, engine: FakeEngine) -> None:
    r = await net.client.post(COMPLETIONS, json=completion_body(max_tokens=4))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    (choice,) = body["choices"]
    assert choice["text"] == "".join(ANSWER[:4])
    assert choice["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert engine.requests[0].kind == "completion"
    assert engine.requests[0].prompt == "Once upon a time"


async def test_completions_streaming(net: LocalNetwork, engine: FakeEngine) -> None:
    r = await net.client.post(
        COMPLETIONS,
        json=completion_body(
            prompt=["one prompt"], stream=True, stream_options={"include_usage": True}
        ),
    )
    payloads = sse_payloads(r.text)
    assert {p["object"] for p in payloads} == {"text_completion"}
    assert streamed_text(payloads) == TEXT
    assert payloads[-1]["usage"]["completion_tokens"] == len(ANSWER)
    assert engine.requests[0].prompt == "one prompt"


async def test_models_and_health(net: LocalNetwork) -> None:
    r = await net.client.get("/health")
    assert r.status_code == 503  # no node yet
    assert r.json()["status"] == "no_capacity"
    assert (await net.client.get("/v1/models")).json() == {"object": "list", "data": []}

    await net.add_node(FakeEngine(), "n1")
    await net.add_node(FakeEngine(), "n2")
    await net.add_node(FakeEngine(model="other"), "n3")
    health = await net.client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["nodes"] == 3
    assert health.json()["models"] == {MODEL: 2, "other": 1}

    listed = (await net.client.get("/v1/models")).json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == [MODEL, "other"]
    assert all(m["object"] == "model" and m["owned_by"] == "lichen" for m in listed["data"])

    card = await net.client.get(f"/v1/models/{MODEL}")
    assert card.status_code == 200
    assert card.json()["id"] == MODEL and card.json()["nodes"] == 2
    assert_openai_error(await net.client.get("/v1/models/nope"), 404, "model_not_found")


async def test_auto_model_routes_to_the_most_served_model(
    net: LocalNetwork, engine: FakeEngine
) -> None:
    r = await net.client.post(CHAT, json=chat_body(model="auto"))
    assert r.status_code == 200
    assert r.json()["model"] == MODEL


async def test_request_metadata_is_recorded_without_content(
    net: LocalNetwork, engine: FakeEngine
) -> None:
    await net.client.post(CHAT, json=chat_body())
    await net.client.post(COMPLETIONS, json=completion_body(stream=True))
    await net.client.post(CHAT, json=chat_body(max_tokens=2))
    await eventually(lambda: len(net.records) == 3, what="three request records")
    chat, completion, limited = net.records
    assert (chat.kind, chat.status, chat.stream) == ("chat", 200, False)
    assert (chat.prompt_tokens, chat.completion_tokens) == (5, 8)
    assert chat.node_peer_id == net.nodes[0].peer_id
    assert (completion.kind, completion.stream, completion.completion_tokens) == (
        "completion",
        True,
        8,
    )
    assert (limited.status, limited.completion_tokens) == (200, 2)
    assert all(r.ttft_ms is not None and r.latency_ms >= r.ttft_ms for r in net.records)
    for record in net.records:
        assert "Say hi" not in repr(record) and TEXT not in repr(record)


# --- errors: always the right status and OpenAI's shape, never a 200 ------------------


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("content", [b'{"model": "fake-model", "messages": [', b"", b"\xff\xfe"])
async def test_malformed_json_is_400(
    net: LocalNetwork, engine: FakeEngine, path: str, content: bytes
) -> None:
    r = await net.client.post(path, content=content, headers={"content-type": "application/json"})
    error = assert_openai_error(r, 400, "invalid_json")
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, chat_body(temperature=3), "temperature"),
        (CHAT, chat_body(top_p=0), "top_p"),
        (CHAT, chat_body(max_tokens=0), "max_tokens"),
        (CHAT, chat_body(max_completion_tokens=-1), "max_completion_tokens"),
        (CHAT, chat_body(n=99), "n"),
        (CHAT, chat_body(stop=["a", "b", "c", "d", "e"]), "stop"),
        (CHAT, chat_body(messages=[]), "messages"),
        (CHAT, chat_body(messages="hi"), "messages"),
        (CHAT, chat_body(messages=[{"role": "robot", "content": "x"}]), "messages.0.role"),
        (CHAT, chat_body(stream="sometimes"), "stream"),
        (CHAT, chat_body(presence_penalty=9), "presence_penalty"),
        (CHAT, chat_body(response_format={"type": "xml"}), "response_format"),
        (CHAT, {"messages": [{"role": "user", "content": "x"}]}, "model"),
        (CHAT, chat_body(model=""), "model"),
        (COMPLETIONS, {"model": MODEL}, "prompt"),
        (COMPLETIONS, completion_body(echo=True), "echo"),
        (COMPLETIONS, completion_body(prompt=["a", "b"]), "prompt"),
    ],
)
async def test_invalid_parameters_are_400_naming_the_param(
    net: LocalNetwork, engine: FakeEngine, path: str, body: dict[str, Any], param: str
) -> None:
    error = assert_openai_error(
        await net.client.post(path, json=body), 400, "invalid_request_error"
    )
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"
    assert engine.requests == []  # nothing reached a node


async def test_non_object_json_is_400(net: LocalNetwork, engine: FakeEngine) -> None:
    r = await net.client.post(CHAT, json=["not", "an", "object"])
    assert_openai_error(r, 400, "invalid_request_error")


async def test_multipart_content_is_flattened_and_images_are_refused(
    net: LocalNetwork, engine: FakeEngine
) -> None:
    parts = [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi"}]
    r = await net.client.post(CHAT, json=chat_body(messages=[{"role": "user", "content": parts}]))
    assert r.status_code == 200
    assert engine.requests[0].messages[0].content == "Say hi"
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    r = await net.client.post(CHAT, json=chat_body(messages=[{"role": "user", "content": image}]))
    assert assert_openai_error(r, 400, "invalid_request_error")["param"] == "messages"


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_unknown_model_is_404(net: LocalNetwork, engine: FakeEngine, path: str) -> None:
    body = chat_body(model="no-such-model") if path == CHAT else completion_body(model="x")
    error = assert_openai_error(await net.client.post(path, json=body), 404, "model_not_found")
    assert error["param"] == "model"
    assert error["type"] == "not_found_error"


async def test_too_large_body_is_413(net: LocalNetwork, engine: FakeEngine) -> None:
    big = chat_body(messages=[{"role": "user", "content": "x" * 8192}])
    error = assert_openai_error(await net.client.post(CHAT, json=big), 413, "request_too_large")
    assert error["type"] == "invalid_request_error"

    async def chunked() -> AsyncIterator[bytes]:  # no content-length: counted while reading
        yield b'{"model": "fake-model", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1024
        yield b'"}]}'

    r = await net.client.post(CHAT, content=chunked(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_openai_error(r, 413, "request_too_large")
    assert engine.requests == []


async def test_no_node_is_503(net: LocalNetwork) -> None:
    error = assert_openai_error(
        await net.client.post(CHAT, json=chat_body(model="auto")), 503, "no_capacity"
    )
    assert error["type"] == "service_unavailable_error"


async def test_only_draining_nodes_is_503(net: LocalNetwork, engine: FakeEngine) -> None:
    node = net.nodes[0]
    node.agent.draining = True
    await node.agent.heartbeat()
    await eventually(lambda: net.connection(node).state.draining, what="draining heartbeat")
    for path, body in [(CHAT, chat_body()), (COMPLETIONS, completion_body(stream=True))]:
        assert_openai_error(await net.client.post(path, json=body), 503, "no_capacity")
    assert engine.requests == []


async def test_node_refusing_the_job_is_503(net: LocalNetwork, engine: FakeEngine) -> None:
    # The node drains, but the tracker has not heard yet: the node refuses the job itself.
    net.nodes[0].agent.draining = True
    r = await net.client.post(CHAT, json=chat_body(stream=True))
    assert_openai_error(r, 503, "no_capacity")


async def test_unknown_route_and_wrong_method_are_openai_shaped(net: LocalNetwork) -> None:
    assert_openai_error(await net.client.get("/v1/nothing"), 404, "not_found")
    r = await net.client.get(CHAT)
    assert r.status_code == 405
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


async def test_engine_error_before_the_first_token_is_an_error_status(net: LocalNetwork) -> None:
    await net.add_node(FakeEngine(fail_after=0, failure="crash"), "broken")
    for stream in (False, True):
        r = await net.client.post(CHAT, json=chat_body(stream=stream))
        assert r.status_code >= 500, r.text
        assert "error" in json.loads(r.text)
