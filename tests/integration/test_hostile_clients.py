"""Hostile clients against the real tracker stack (issue 10): each case observed when
the network was first tried as an attacker would, now refused with a typed error,
before any node sees it, with nothing left in flight afterwards."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from fakes import MODEL, FakeEngine, assert_openai_error, eventually
from hostile_kit import HostileStack, chunked_upload, hostile_stack

from lichen.accounts.principal import SCOPE_ACCOUNT, SCOPE_INFERENCE
from lichen.wire.messages import ModelInfo

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HUGE = 2**64


def chat_body(**changes: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}]} | changes


def completion_body(**changes: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "Once upon a time"} | changes


@pytest.fixture
async def one_node_stack(tmp_path: Path) -> AsyncIterator[HostileStack]:
    async with hostile_stack(tmp_path) as stack:
        yield stack


async def assert_untouched(one_node_stack: HostileStack) -> None:
    """The refused request never reached the node, and nothing is left in flight."""
    assert one_node_stack.engine.requests == []
    assert one_node_stack.connection().state.failures == 0
    await one_node_stack.settled()


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, chat_body(seed=HUGE), "seed"),
        (CHAT, chat_body(seed=2**40), "seed"),
        (CHAT, chat_body(seed=-1), "seed"),
        (CHAT, chat_body(max_tokens=HUGE), "max_tokens"),
        (CHAT, chat_body(max_tokens=10**9), "max_tokens"),
        (CHAT, chat_body(max_completion_tokens=HUGE), "max_completion_tokens"),
        (COMPLETIONS, completion_body(seed=HUGE), "seed"),
        (COMPLETIONS, completion_body(max_tokens=HUGE), "max_tokens"),
        (COMPLETIONS, completion_body(max_tokens=10**9), "max_tokens"),
    ],
)
async def test_huge_integers_are_400_and_never_reach_a_node(
    one_node_stack: HostileStack, path: str, body: dict[str, Any], param: str
) -> None:
    for stream in (False, True):
        error = assert_openai_error(
            await one_node_stack.client.post(path, json=body | {"stream": stream}),
            400,
            "invalid_request_error",
        )
        assert error["param"] == param
    await assert_untouched(one_node_stack)


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
@pytest.mark.parametrize(
    "options",
    [
        {"seed": HUGE},
        {"seed": 2**40},
        {"num_predict": HUGE},
        {"stop": [f"s{i}" for i in range(1000)]},
        {"stop": ["x" * 10_000]},
        {"temperature": 1e308},
    ],
)
async def test_ollama_options_are_bounded_like_openai(
    one_node_stack: HostileStack, path: str, options: dict[str, Any]
) -> None:
    body: dict[str, Any] = {"model": MODEL, "stream": False, "options": options}
    if path == "/api/chat":
        body["messages"] = [{"role": "user", "content": "hi"}]
    else:
        body["prompt"] = "hi"
    response = await one_node_stack.client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["error"], str)  # Ollama's error shape
    await assert_untouched(one_node_stack)


async def test_openai_and_ollama_refuse_the_same_stop_lists(one_node_stack: HostileStack) -> None:
    five = [f"s{i}" for i in range(5)]
    error = assert_openai_error(
        await one_node_stack.client.post(CHAT, json=chat_body(stop=five)),
        400,
        "invalid_request_error",
    )
    assert error["param"] == "stop"
    body = {"model": MODEL, "stream": False, "prompt": "hi", "options": {"stop": five}}
    assert (await one_node_stack.client.post("/api/generate", json=body)).status_code == 400
    await assert_untouched(one_node_stack)


@pytest.mark.parametrize(
    "calls",
    [
        [1, 2],
        "not a list",
        [{"id": "c1", "type": "function"}],
        [{"id": "c1", "type": "function", "function": {"name": 7, "arguments": "{}"}}],
        [{"id": ["x"], "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    ],
)
async def test_malformed_tool_calls_are_the_clients_400_not_the_nodes_failure(
    one_node_stack: HostileStack, calls: Any
) -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "user", "content": "again"},
    ]
    for stream in (False, True):
        response = await one_node_stack.client.post(
            CHAT, json=chat_body(messages=messages, stream=stream)
        )
        error = assert_openai_error(response, 400, "invalid_request_error")
        assert (error["param"] or "").startswith("messages.1.tool_calls")
    await assert_untouched(one_node_stack)


async def test_well_formed_tool_calls_still_reach_the_node(one_node_stack: HostileStack) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    response = await one_node_stack.client.post(CHAT, json=chat_body(messages=messages))
    assert response.status_code == 200, response.text
    sent = json.loads(one_node_stack.engine.requests[0].messages[1].tool_calls or "[]")
    assert sent == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]
    await one_node_stack.settled()


def enum_bomb() -> dict[str, Any]:
    """The 189 KB schema that stalled a node for minutes: 20,000 enum strings."""
    return {"enum": [f"value-{i:05d}" for i in range(20_000)]}


async def test_the_enum_bomb_is_refused_before_routing(one_node_stack: HostileStack) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "bomb", "schema": enum_bomb()}}
    body = chat_body(response_format=fmt)
    assert len(json.dumps(body)) > 180_000
    error = assert_openai_error(
        await one_node_stack.client.post(CHAT, json=body), 400, "invalid_request_error"
    )
    assert error["param"] == "response_format"
    ollama = {"model": MODEL, "stream": False, "prompt": "hi", "format": enum_bomb()}
    assert (await one_node_stack.client.post("/api/generate", json=ollama)).status_code == 400
    await assert_untouched(one_node_stack)


class ToolEngine(FakeEngine):
    def models(self) -> list[ModelInfo]:
        return [msgspec.structs.replace(m, tools=True) for m in super().models()]


async def test_tool_parameter_schemas_are_bounded_too(tmp_path: Path) -> None:
    async with hostile_stack(tmp_path, ToolEngine()) as one_node_stack:
        for parameters, words in ((enum_bomb(), "bytes"), ({"enum": list(range(500))}, "enum")):
            tools = [{"type": "function", "function": {"name": "f", "parameters": parameters}}]
            response = await one_node_stack.client.post(CHAT, json=chat_body(tools=tools))
            error = assert_openai_error(response, 400, "invalid_request_error")
            assert error["param"] == "tools" and words in error["message"]
        await assert_untouched(one_node_stack)
        small = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
        assert (
            await one_node_stack.client.post(CHAT, json=chat_body(tools=small))
        ).status_code == 200


async def test_a_schema_within_the_limits_is_served(one_node_stack: HostileStack) -> None:
    schema = {"type": "object", "properties": {"a": {"enum": ["x", "y"]}}, "required": ["a"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "ok", "schema": schema}}
    assert (
        await one_node_stack.client.post(CHAT, json=chat_body(response_format=fmt))
    ).status_code == 200
    await one_node_stack.settled()


def costly_schema() -> dict[str, Any]:
    """Inside every schema limit, about 9 KB: what held llama.cpp's loop for seconds."""
    alternatives = []
    for i in range(16):
        properties: dict[str, Any] = {f"k{i}": {"enum": [f"v{i}-{j}-" + "x" * 200 for j in (0, 1)]}}
        properties |= {f"s{i}_{j}": {"type": "string"} for j in range(3)}
        alternatives.append({"type": "object", "properties": properties})
    return {"anyOf": alternatives}


async def test_large_schemas_spend_more_of_the_rate_limit(tmp_path: Path) -> None:
    settings = {"limit_loopback": True, "anonymous_requests_per_minute": 20}
    async with hostile_stack(tmp_path, **settings) as one_node_stack:
        fmt = {"type": "json_schema", "json_schema": {"name": "f", "schema": costly_schema()}}
        weight = 1 + math.ceil((len(json.dumps(fmt)) - 4096) / 1024)
        assert 5 <= weight <= 10
        served = 0
        while True:
            response = await one_node_stack.client.post(CHAT, json=chat_body(response_format=fmt))
            if response.status_code != 200:
                break
            served += 1
        error = assert_openai_error(response, 429, "rate_limit_exceeded")
        assert f"counts as {weight} requests" in error["message"]
        assert "JSON schemas" in error["message"] and int(response.headers["retry-after"]) >= 1
        # Not 20: each spent ``weight`` of the minute's budget (twice that if the
        # fixed one-minute window turned over during the loop).
        assert 20 // weight <= served <= 2 * (20 // weight)
        # A small schema costs one request, and another address is unaffected.
        other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=other, base_url=one_node_stack.url, timeout=30) as c:
            small = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"enum": [1]}}}
            for _ in range(20):
                ok = await c.post(CHAT, json=chat_body(response_format=small, max_tokens=2))
                assert ok.status_code == 200, ok.text
        await one_node_stack.settled()


async def test_huge_chunked_bodies_are_refused_early_on_every_kind_of_route(
    one_node_stack: HostileStack,
) -> None:
    for path in ("/v1/auth/signup", "/node/telemetry", CHAT, "/api/chat"):
        status, body, sent = await chunked_upload(one_node_stack.port, path, 200 * 1024 * 1024)
        assert status == 413, (path, body)
        error = body["error"]  # Ollama's shape on /api/*: the message as a string
        assert (
            "limit" in error if path.startswith("/api/") else error["code"] == "request_too_large"
        )
        assert sent < 16 * 1024 * 1024, (path, sent)
    await assert_untouched(one_node_stack)


# --- concurrency: one client cannot hold every slot ------------------------------------


async def test_a_client_past_its_concurrency_cap_gets_429_while_others_are_served(
    tmp_path: Path,
) -> None:
    slow = FakeEngine(tokens=["tok "] * 5000, delay_s=0.02, slots=8)
    settings = {"limit_loopback": True, "anonymous_concurrent_requests": 2}
    async with hostile_stack(tmp_path, slow, **settings) as one_node_stack:
        stream = chat_body(stream=True)
        async with contextlib.AsyncExitStack() as held:
            for _ in range(2):  # two streams that are never read
                response = await held.enter_async_context(
                    one_node_stack.client.stream("POST", CHAT, json=stream)
                )
                assert response.status_code == 200
            refused = await one_node_stack.client.post(CHAT, json=stream)
            assert_openai_error(refused, 429, "rate_limit_exceeded")
            assert int(refused.headers["retry-after"]) >= 1
            ollama = {"model": MODEL, "prompt": "hi", "stream": False}
            assert (
                await one_node_stack.client.post("/api/generate", json=ollama)
            ).status_code == 429
            # Another client (another address) is served meanwhile.
            other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
            async with httpx.AsyncClient(
                transport=other, base_url=one_node_stack.url, timeout=30
            ) as c:
                served = await c.post(CHAT, json=chat_body(max_tokens=3))
                assert served.status_code == 200, served.text
        # The streams ended (the client went away): their slots are free again.
        await one_node_stack.settled()
        again = await one_node_stack.client.post(CHAT, json=chat_body(max_tokens=3))
        assert again.status_code == 200, again.text
        await one_node_stack.settled()


# --- per-subject data, keys, and small ones --------------------------------------------


async def _key(one_node_stack: HostileStack, scopes: list[str], username: str = "alice") -> str:
    acc = one_node_stack.stack.accounting
    assert acc is not None
    account = await acc.accounts.signup(username, f"{username}@example.org", "pw-" + "x" * 16)
    return (await acc.keys.create(account.id, name="k", scopes=scopes)).secret


async def test_only_a_verified_key_deletes_kept_data(tmp_path: Path) -> None:
    async with hostile_stack(tmp_path, policy="dataset") as one_node_stack:
        key = await _key(one_node_stack, [SCOPE_INFERENCE])
        mine = await one_node_stack.client.post(
            CHAT, json=chat_body(), headers={"authorization": f"Bearer {key}"}
        )
        assert mine.status_code == 200, mine.text
        placeholder = {"authorization": "Bearer unused"}  # the README's placeholder
        theirs = await one_node_stack.client.post(CHAT, json=chat_body(), headers=placeholder)
        assert theirs.status_code == 200, theirs.text
        assert (
            await one_node_stack.client.delete("/privacy/data", headers=placeholder)
        ).status_code == 401
        forged = {"authorization": "Bearer lk-" + "x" * 43}
        assert (
            await one_node_stack.client.delete("/privacy/data", headers=forged)
        ).status_code == 401
        bearer = {"authorization": f"Bearer {key}"}
        deleted = await one_node_stack.client.delete("/privacy/data", headers=bearer)
        assert deleted.json() == {"deleted": 1}
        # The anonymous exchange is still there: its own token deletes it.
        token = {
            "x-lichen-request-id": theirs.headers["x-lichen-request-id"],
            "x-lichen-deletion-token": theirs.headers["x-lichen-deletion-token"],
        }
        assert (await one_node_stack.client.delete("/privacy/data", headers=token)).json() == {
            "deleted": 1
        }
        await one_node_stack.settled()


async def test_an_account_key_cannot_mint_broader_keys(one_node_stack: HostileStack) -> None:
    key = await _key(one_node_stack, [SCOPE_ACCOUNT])
    bearer = {"authorization": f"Bearer {key}"}
    broader = await one_node_stack.client.post(
        "/v1/account/keys", json={"scopes": ["inference"]}, headers=bearer
    )
    error = assert_openai_error(broader, 403, "forbidden")
    assert error["param"] == "scopes"
    both = await one_node_stack.client.post(
        "/v1/account/keys", json={"scopes": ["inference", "account"]}, headers=bearer
    )
    assert both.status_code == 403
    same = await one_node_stack.client.post(
        "/v1/account/keys", json={"scopes": ["account"]}, headers=bearer
    )
    assert same.status_code == 201, same.text


@pytest.mark.parametrize("limit", ["abc", "-1", "0", "1e9", "100000", "1.5", "%00"])
async def test_feed_limit_is_validated(tmp_path: Path, limit: str) -> None:
    async with hostile_stack(tmp_path, policy="open") as one_node_stack:
        response = await one_node_stack.client.get(f"/feed.json?limit={limit}")
        assert_openai_error(response, 400, "invalid_request_error")
        assert (await one_node_stack.client.get("/feed.json?limit=5")).status_code == 200


# --- DNS rebinding and cross-site requests ---------------------------------------------


async def test_unknown_host_names_are_refused(one_node_stack: HostileStack) -> None:
    rebinding = {"host": f"evil.example:{one_node_stack.port}"}
    assert_openai_error(
        await one_node_stack.client.get("/health", headers=rebinding), 403, "forbidden"
    )
    assert_openai_error(
        await one_node_stack.client.post(CHAT, json=chat_body(), headers=rebinding),
        403,
        "forbidden",
    )
    for host in (
        f"localhost:{one_node_stack.port}",
        f"127.0.0.1:{one_node_stack.port}",
        "127.0.0.1",
    ):
        assert (
            await one_node_stack.client.get("/v1/models", headers={"host": host})
        ).status_code == 200
    await assert_untouched(one_node_stack)


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"origin": "http://127.0.0.1:1"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
    ],
)
async def test_cross_site_state_changes_are_refused(
    one_node_stack: HostileStack, headers: dict[str, str]
) -> None:
    for path, body in ((CHAT, chat_body()), ("/node/telemetry", {"telemetry": True})):
        response = await one_node_stack.client.post(path, json=body, headers=headers)
        assert_openai_error(response, 403, "forbidden")
    assert (
        await one_node_stack.client.get("/v1/models", headers=headers)
    ).status_code == 200  # reads pass
    await assert_untouched(one_node_stack)


async def test_same_origin_browser_requests_pass(one_node_stack: HostileStack) -> None:
    same = {"origin": f"http://127.0.0.1:{one_node_stack.port}", "sec-fetch-site": "same-origin"}
    assert (
        await one_node_stack.client.post(CHAT, json=chat_body(), headers=same)
    ).status_code == 200
    await one_node_stack.settled()


async def test_loopback_trust_needs_a_loopback_host_name(tmp_path: Path) -> None:
    async with hostile_stack(tmp_path, allowed_hosts="lichen.example.org") as one_node_stack:
        page = await one_node_stack.client.get("/node")
        token = page.cookies.get("lichen_csrf") or one_node_stack.client.cookies.get("lichen_csrf")
        assert token
        proxied = {"host": "lichen.example.org", "x-csrf-token": token}
        # public traffic forwarded by a proxy on this host is not "this machine"
        refused = await one_node_stack.client.post(
            "/node/telemetry", json={"telemetry": True}, headers=proxied
        )
        assert_openai_error(refused, 403, "forbidden")
        local = {"x-csrf-token": token, "accept": "application/json"}
        ok = await one_node_stack.client.post(
            "/node/telemetry", json={"telemetry": False}, headers=local
        )
        assert ok.status_code == 200, ok.text


async def test_nothing_is_left_in_flight_after_a_client_leaves_mid_stream(
    tmp_path: Path,
) -> None:
    slow = FakeEngine(tokens=["tok "] * 2000, delay_s=0.01)
    async with hostile_stack(tmp_path, slow) as one_node_stack:
        async with one_node_stack.client.stream(
            "POST", CHAT, json=chat_body(stream=True)
        ) as response:
            async for _ in response.aiter_bytes():
                break
        await eventually(lambda: slow.cancelled == 1, what="the job to be cancelled")
        await one_node_stack.settled()
