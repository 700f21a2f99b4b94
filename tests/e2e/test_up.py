"""``lichen up`` as a real process with the real model, driven by the official ``openai`` client.

One module-scoped process serves every test here (starting one costs seconds).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from harness import DEFAULT_MODEL, Harness, LichenProcess
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

pytestmark = pytest.mark.e2e

STORY: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a long story about a dragon who learns to paint."}
]


@pytest.fixture(scope="module")
def up(module_harness: Harness) -> LichenProcess:
    return module_harness.up()


@pytest.fixture
def client(up: LichenProcess) -> OpenAI:
    return OpenAI(base_url=f"{up.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def http(up: LichenProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=up.url, timeout=120) as c:
        yield c


def test_health_and_models(up: LichenProcess, client: OpenAI, http: httpx.Client) -> None:
    health = http.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["models"] == {DEFAULT_MODEL: 1}
    assert [m.id for m in client.models.list()] == [DEFAULT_MODEL]
    assert client.models.retrieve(DEFAULT_MODEL).id == DEFAULT_MODEL


def test_chat_non_streaming(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Say hi"}],
        max_tokens=24,
        temperature=0,
    )
    assert reply.object == "chat.completion"
    assert reply.model == DEFAULT_MODEL
    (choice,) = reply.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_streaming(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Say hi"}],
        max_tokens=24,
        temperature=0,
        stream=True,
    )
    chunks = list(stream)
    assert chunks, "no chunks"
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.usage is None for c in chunks)  # not asked for


def test_streamed_token_count_matches_usage(client: OpenAI) -> None:
    """Greedy, ended by max_tokens: one content chunk per token, and usage agrees."""
    limit = 32
    stream = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=STORY,
        max_tokens=limit,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["length"]
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert usage.completion_tokens == limit
    assert len(content) == usage.completion_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    # The same request without streaming: same greedy text, same usage.
    whole = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=STORY,
        max_tokens=limit,
        temperature=0,
    )
    assert whole.choices[0].message.content == "".join(content)
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )


def test_completions_stream_and_non_stream(client: OpenAI) -> None:
    prompt = "The three primary colors are"
    whole = client.completions.create(
        model=DEFAULT_MODEL, prompt=prompt, max_tokens=12, temperature=0
    )
    assert whole.object == "text_completion"
    assert whole.choices[0].text.strip()
    assert whole.usage is not None and whole.usage.completion_tokens <= 12
    stream = client.completions.create(
        model=DEFAULT_MODEL, prompt=prompt, max_tokens=12, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == whole.choices[0].text


def test_raw_sse_like_curl(http: httpx.Client) -> None:
    """The README's curl command: a real SSE stream ending with [DONE]."""
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "Say hi"}],
        "stream": True,
        "max_tokens": 16,
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    payloads = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)


def _error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    return dict(body["error"])


def test_error_statuses_and_shapes(http: httpx.Client) -> None:
    chat = "/v1/chat/completions"
    headers = {"content-type": "application/json"}
    _error(http.post(chat, content=b'{"model": ', headers=headers), 400, "invalid_json")
    error = _error(
        http.post(chat, json={"model": DEFAULT_MODEL, "messages": [], "max_tokens": 4}),
        400,
        "invalid_request_error",
    )
    assert error["param"] == "messages"
    error = _error(
        http.post("/v1/completions", json={"model": "no-such-model", "prompt": "x"}),
        404,
        "model_not_found",
    )
    assert error["param"] == "model"
    _error(http.get("/v1/models/no-such-model"), 404, "model_not_found")
    big = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "x" * 1_100_000}]}
    _error(http.post(chat, json=big), 413, "request_too_large")
    # The process is still healthy after all of that.
    assert http.get("/health").status_code == 200


def test_errors_through_the_openai_client(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": "x"}], temperature=5
        )
    assert bad.value.status_code == 400
    assert isinstance(bad.value.body, dict) and bad.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


async def test_twenty_concurrent_streams_all_complete(up: LichenProcess) -> None:
    client = AsyncOpenAI(base_url=f"{up.url}/v1", api_key="unused", max_retries=0, timeout=300)

    async def one(i: int) -> tuple[str, str | None, int]:
        stream = await client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[
                {"role": "user", "content": f"Name an animal that starts with {chr(65 + i)}."}
            ],
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, tokens = "", None, -1
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return text, finish, tokens

    try:
        results = await asyncio.gather(*(one(i) for i in range(20)))
    finally:
        await client.close()
    assert len(results) == 20
    for text, finish, tokens in results:
        assert text.strip()
        assert finish in ("stop", "length")
        assert 0 < tokens <= 12
