"""Long prompts go only to nodes whose per-request context can hold them; a prompt
no node can hold is refused with ``context_length_exceeded`` and the numbers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fakes import MODEL, FakeEngine, LocalNetwork, assert_openai_error

from lichen.config import Settings
from lichen.routing.context import BYTES_PER_TOKEN_MAX
from lichen.wire.messages import ModelInfo

CHAT = "/v1/chat/completions"


class SizedEngine(FakeEngine):
    """A fake engine publishing a per-request context."""

    def __init__(self, context: int) -> None:
        super().__init__(slots=4)
        self.context = context

    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                name=self.model, sha256="0" * 64, engine=self.kind, slots=4, context=self.context
            )
        ]


@pytest.fixture
def net_options() -> dict[str, Any]:
    """The shared ``net`` fixture, with room for the large prompts these tests send."""
    return {"max_request_bytes": 256 * 1024}


def _body(tokens: int) -> dict[str, object]:
    text = "x" * (tokens * BYTES_PER_TOKEN_MAX)  # exactly ``tokens`` by the lower bound
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 4}


async def test_a_long_prompt_goes_to_the_node_that_can_hold_it(net: LocalNetwork) -> None:
    small, large = SizedEngine(1_000), SizedEngine(8_000)
    await net.add_node(small, "small")
    await net.add_node(large, "large")
    for _ in range(4):
        response = await net.client.post(CHAT, json=_body(3_000))
        assert response.status_code == 200, response.text
    assert len(large.requests) == 4 and small.requests == []
    short = [await net.client.post(CHAT, json=_body(10)) for _ in range(8)]
    assert all(r.status_code == 200 for r in short)
    assert len(small.requests) + len(large.requests) == 12


async def test_a_prompt_no_node_can_hold_is_refused_with_the_numbers(net: LocalNetwork) -> None:
    small, large = SizedEngine(1_000), SizedEngine(8_000)
    await net.add_node(small, "small")
    await net.add_node(large, "large")
    response = await net.client.post(CHAT, json=_body(9_000))
    error = assert_openai_error(response, 400, "context_length_exceeded")
    assert "9000 tokens" in error["message"] and "8000 tokens" in error["message"]
    assert "LICHEN_CTX_SIZE" in error["message"]
    assert small.requests == [] and large.requests == []


async def test_an_unknown_limit_never_refuses(net: LocalNetwork) -> None:
    unknown = SizedEngine(0)
    await net.add_node(unknown, "unknown")
    response = await net.client.post(CHAT, json=_body(9_000))
    assert response.status_code == 200, response.text
    assert len(unknown.requests) == 1


class GenericToolEngine(SizedEngine):
    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                name=self.model,
                sha256="0" * 64,
                engine=self.kind,
                context=self.context,
                tools=True,
                tool_format="generic",
            )
        ]


async def test_models_list_says_tool_support_and_the_largest_context(net: LocalNetwork) -> None:
    await net.add_node(SizedEngine(1_000), "plain")
    card = (await net.client.get(f"/v1/models/{MODEL}")).json()
    assert card["tools"] == "none" and card["context_length"] == 1_000
    await net.add_node(GenericToolEngine(4_000), "generic")
    listed = (await net.client.get("/v1/models")).json()["data"]
    assert [(m["id"], m["tools"], m["context_length"]) for m in listed] == [
        (MODEL, "generic", 4_000)
    ]


AGENT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{i}",
            "description": "An agent tool. " * 40,
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
    for i in range(10)
]
AGENT_SYSTEM = "Rule: keep functions short, test them and explain the change. " * 2_200


def _agent_bodies() -> dict[str, dict[str, Any]]:
    """One realistic agent request (~140 KB: a long system prompt and 10 tools) per dialect."""
    functions = [t["function"] for t in AGENT_TOOLS]
    return {
        CHAT: {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": AGENT_SYSTEM},
                {"role": "user", "content": "Fix the failing test."},
            ],
            "tools": AGENT_TOOLS,
            "max_tokens": 4,
        },
        "/v1/responses": {
            "model": MODEL,
            "instructions": AGENT_SYSTEM,
            "input": "Fix the failing test.",
            "tools": [{"type": "function", **f} for f in functions],
            "max_output_tokens": 4,
        },
        "/v1/messages": {
            "model": MODEL,
            "system": AGENT_SYSTEM,
            "messages": [{"role": "user", "content": "Fix the failing test."}],
            "tools": [
                {
                    "name": f["name"],
                    "description": f["description"],
                    "input_schema": f["parameters"],
                }
                for f in functions
            ],
            "max_tokens": 4,
        },
        "/api/chat": {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": AGENT_SYSTEM},
                {"role": "user", "content": "Fix the failing test."},
            ],
            "tools": AGENT_TOOLS,
            "stream": False,
        },
    }


@pytest.fixture
async def default_net(tmp_path: Path) -> AsyncIterator[LocalNetwork]:
    """A gateway with the shipped body limit (``LICHEN_MAX_REQUEST_BYTES``'s default)."""
    limit = Settings.model_fields["max_request_bytes"].default
    network = await LocalNetwork(tmp_path, max_request_bytes=limit).start()
    try:
        yield network
    finally:
        await network.close()


async def test_realistic_agent_requests_pass_every_dialect(default_net: LocalNetwork) -> None:
    engine = GenericToolEngine(65_536)
    await default_net.add_node(engine, "large")
    for path, body in _agent_bodies().items():
        size = len(json.dumps(body).encode())
        assert size >= 128 * 1024, (path, size)
        response = await default_net.client.post(path, json=body)
        assert response.status_code == 200, (path, response.text[:300])
    assert len(engine.requests) == 4
    assert all(r.params.tools for r in engine.requests)


async def test_hostile_sizes_stay_refused_with_agent_sized_limits(
    default_net: LocalNetwork,
) -> None:
    engine = GenericToolEngine(10_000_000)
    await default_net.add_node(engine, "huge")
    limit = Settings.model_fields["max_request_bytes"].default
    body = _agent_bodies()[CHAT]
    body["messages"][0]["content"] = "x" * limit  # the body is over the cap
    assert_openai_error(await default_net.client.post(CHAT, json=body), 413, "request_too_large")
    body = _agent_bodies()[CHAT]
    body["tools"] = AGENT_TOOLS * 30  # a tools array over LICHEN_LIMIT_TOOLS_BYTES
    error = assert_openai_error(
        await default_net.client.post(CHAT, json=body), 400, "invalid_request_error"
    )
    assert error["param"] == "tools"
    assert engine.requests == []
