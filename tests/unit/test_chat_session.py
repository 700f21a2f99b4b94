"""``lichen chat``'s session: streaming over the OpenAI API, history, commands, pipes."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest

from lichen.cli import chat as chat_module
from lichen.cli.chat import ChatError, ChatSession, run_chat


def _sse(*pieces: str) -> bytes:
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces
    ]
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + (
        b"data: [DONE]\n\n"
    )


class Gateway:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        self.headers.append(request.headers)
        if body["model"] == "missing":
            return httpx.Response(404, json={"error": {"message": "no such model"}})
        return httpx.Response(200, content=_sse("Hel", "lo"))


def test_answers_stream_and_join_the_history() -> None:
    gateway = Gateway()
    session = ChatSession(url="http://gw", api_key="k1", system="Be brief.", max_tokens=5)
    with httpx.Client(transport=httpx.MockTransport(gateway)) as client:
        assert list(session.ask(client, "hi")) == ["Hel", "lo"]
        assert "".join(session.ask(client, "again")) == "Hello"
    first, second = gateway.bodies
    assert first["stream"] is True and first["max_tokens"] == 5
    assert [m["role"] for m in second["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
    ]
    assert second["messages"][2]["content"] == "Hello"
    assert gateway.headers[0]["authorization"] == "Bearer k1"
    assert session.endpoint == "http://gw/v1/chat/completions"


def test_errors_raise_chat_error_and_do_not_join_the_history() -> None:
    session = ChatSession(url="http://gw/v1", model="missing")
    with (
        httpx.Client(transport=httpx.MockTransport(Gateway())) as client,
        pytest.raises(ChatError, match=r"no such model.*404"),
    ):
        list(session.ask(client, "hi"))
    assert session.history == []


def test_run_chat_over_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = Gateway()
    real_client = httpx.Client

    def client(**_kw: Any) -> httpx.Client:
        return real_client(transport=httpx.MockTransport(gateway))

    monkeypatch.setattr(chat_module.httpx, "Client", client)
    out, err = io.StringIO(), io.StringIO()
    session = ChatSession(url="http://gw")
    status = run_chat(
        session, io.StringIO("one\n/model missing\ntwo\n/reset\n/quit\nthree\n"), out, err
    )
    assert status == 1  # "two" went to a missing model
    assert out.getvalue() == "Hello\n"
    assert "model: missing" in err.getvalue() and "error:" in err.getvalue()
    assert session.history == []  # /reset
    assert len(gateway.bodies) == 2  # nothing after /quit
