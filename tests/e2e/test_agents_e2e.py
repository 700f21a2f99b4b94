"""Coding agents against a real ``lichen up`` (SmolLM2, no native tool template):
10 tools and a long prompt through chat completions, Responses and Messages,
streamed and not; ``tool_choice`` required/named; a prompt longer than the node's
per-request context refused with the numbers, one that fits only the larger of two
nodes routed there; prefix-cache reuse over 5 agent turns (the node's report)."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any, cast

import anthropic
import httpx
import pytest
from clients import NO_ANONYMOUS_LIMITS, anonymous_openai
from harness import DEFAULT_MODEL, Harness, HttpReady, LichenProcess, lichen_argv, scrubbed_env
from openai import OpenAI

# a cold ~6,000-token prompt on one shared CPU thread takes minutes
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CTX = 8192
NAMES = ["read_file", "write_file", "list_dir", "grep", "run_tests"]
NAMES += ["git_diff", "git_log", "web_search", "ask_user", "get_weather"]
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"The {name.replace('_', ' ')} tool.",
            "parameters": {
                "type": "object",
                "properties": {"target": {"type": "string", "maxLength": 32}},
                "required": ["target"],
            },
        },
    }
    for name in NAMES
]
RULES = "".join(
    f"Rule {i}: when you edit src/pkg/module_{i}.py keep each function short, "
    f"add a test in tests/test_module_{i}.py and run the suite before you answer.\n"
    for i in range(115)
)  # ~6,000 tokens with the tools
SYSTEM = "You are a careful coding agent working in a Python repository.\n" + RULES
ASK = "What is the weather in Paris? Use the tools if they help."


@pytest.fixture(scope="module")
def up(module_harness: Harness) -> LichenProcess:
    env = NO_ANONYMOUS_LIMITS | {
        "LICHEN_PARALLEL": "2",
        "LICHEN_CTX_SIZE": str(CTX),
        "LICHEN_KV_UNIFIED": "true",
        # one shared thread reads a ~6,000-token prompt in minutes: not a failed or
        # stalled node, nor a request past its deadline
        "LICHEN_FIRST_TOKEN_TIMEOUT_S": "900",
        "LICHEN_REQUEST_TIMEOUT_S": "900",
        "LICHEN_ENGINE_STALL_S": "900",
    }
    return module_harness.up(env=env)


@pytest.fixture
def oai(up: LichenProcess) -> Iterator[OpenAI]:
    with anonymous_openai(f"{up.url}/v1", timeout=600) as client:
        yield client


@pytest.fixture
def claude(up: LichenProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=up.url, api_key="unused", max_retries=0, timeout=600
    ) as client:
        yield client


def _well_formed(name: str, arguments: Any) -> None:
    assert name in NAMES, name
    value = json.loads(arguments) if isinstance(arguments, str) else arguments
    assert isinstance(value, dict) and isinstance(value.get("target"), str), value


def _responses_tools() -> list[Any]:
    return [{"type": "function", **t["function"]} for t in TOOLS]


def _anthropic_tools() -> list[Any]:
    return [
        {"name": f["name"], "description": f["description"], "input_schema": f["parameters"]}
        for f in (t["function"] for t in TOOLS)
    ]


def test_models_say_generic_tools_and_the_unified_context(up: LichenProcess) -> None:
    card = httpx.get(f"{up.url}/v1/models/{DEFAULT_MODEL}", timeout=30).json()
    assert card["tools"] == "generic" and card["context_length"] == CTX


@pytest.mark.parametrize("choice", ["auto", "required", "named"])
@pytest.mark.parametrize("stream", [False, True])
def test_chat_completions(oai: OpenAI, choice: str, stream: bool) -> None:
    tool_choice: Any = choice
    if choice == "named":
        tool_choice = {"type": "function", "function": {"name": "get_weather"}}
    kwargs: Any = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ASK}],
        "tools": TOOLS,
        "tool_choice": tool_choice,
        "max_tokens": 200,
        "temperature": 0,
    }
    if stream:
        text, calls, finish = "", {}, None
        for chunk in oai.chat.completions.create(stream=True, **kwargs):
            for c in chunk.choices:
                text += c.delta.content or ""
                for call in c.delta.tool_calls or ():
                    entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
                    if call.function and call.function.name:
                        entry["name"] += call.function.name
                    if call.function and call.function.arguments:
                        entry["arguments"] += call.function.arguments
                finish = c.finish_reason or finish
        found = list(calls.values())
    else:
        reply = oai.chat.completions.create(**kwargs)
        message, finish = reply.choices[0].message, reply.choices[0].finish_reason
        text = message.content or ""
        found = [
            {"name": c.function.name, "arguments": c.function.arguments}
            for c in message.tool_calls or ()
            if c.type == "function"
        ]
    if choice != "auto" or found:
        assert found and finish == "tool_calls", (text, finish)
        for call in found:
            _well_formed(call["name"], call["arguments"])
        if choice == "named":
            assert {c["name"] for c in found} == {"get_weather"}
    else:
        assert text.strip()


@pytest.mark.parametrize("choice", ["auto", "required", "named"])
@pytest.mark.parametrize("stream", [False, True])
def test_responses(oai: OpenAI, choice: str, stream: bool) -> None:
    tool_choice: Any = choice
    if choice == "named":
        tool_choice = {"type": "function", "name": "get_weather"}
    kwargs: Any = {
        "model": DEFAULT_MODEL,
        "instructions": SYSTEM,
        "input": ASK,
        "tools": _responses_tools(),
        "tool_choice": tool_choice,
        "max_output_tokens": 200,
        "temperature": 0,
    }
    if stream:
        with oai.responses.stream(**kwargs) as events:
            for _ in events:
                pass
            final = events.get_final_response()
    else:
        final = oai.responses.create(**kwargs)
    calls = [item for item in final.output if item.type == "function_call"]
    if choice != "auto" or calls:
        assert calls, final.output
        for call in calls:
            _well_formed(call.name, call.arguments)
        if choice == "named":
            assert {c.name for c in calls} == {"get_weather"}
    else:
        assert final.output_text.strip()


@pytest.mark.parametrize("choice", ["auto", "any", "tool"])
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_messages(claude: anthropic.Anthropic, choice: str, stream: bool) -> None:
    tool_choice: Any = {"type": choice}
    if choice == "tool":
        tool_choice = {"type": "tool", "name": "get_weather"}
    kwargs: Any = {
        "model": DEFAULT_MODEL,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": ASK}],
        "tools": _anthropic_tools(),
        "tool_choice": tool_choice,
        "max_tokens": 200,
    }
    if stream:
        with claude.messages.stream(**kwargs) as events:
            final = events.get_final_message()
    else:
        final = claude.messages.create(**kwargs)
    uses = [b for b in final.content if b.type == "tool_use"]
    if choice != "auto" or uses:
        assert uses and final.stop_reason == "tool_use", final.content
        for use in uses:
            _well_formed(use.name, use.input)
        if choice == "tool":
            assert {u.name for u in uses} == {"get_weather"}
    else:
        assert "".join(b.text for b in final.content if b.type == "text").strip()


@pytest.mark.parametrize(
    "choice", ["sometimes", {"type": "function", "function": {"name": "not_a_tool"}}]
)
def test_a_bad_tool_choice_is_a_400_not_a_guess(up: LichenProcess, choice: Any) -> None:
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": ASK}],
        "tools": TOOLS,
        "tool_choice": choice,
        "max_tokens": 8,
    }
    r = httpx.post(f"{up.url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request_error" and "tool_choice" in error["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_chat_with_tools(up: LichenProcess, stream: bool) -> None:
    """Ollama's API has no tool_choice: the answer is text or well-formed calls."""
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": ASK}],
        "tools": TOOLS,
        "stream": stream,
        "options": {"num_predict": 200, "temperature": 0},
    }
    r = httpx.post(f"{up.url}/api/chat", json=body, timeout=600)
    assert r.status_code == 200, r.text
    lines = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    assert lines and lines[-1]["done"] is True
    text = "".join(line["message"].get("content") or "" for line in lines)
    calls = [c for line in lines for c in line["message"].get("tool_calls") or ()]
    assert calls or text.strip(), lines
    for call in calls:
        _well_formed(call["function"]["name"], call["function"]["arguments"])


def test_a_prompt_longer_than_any_node_can_hold_is_refused(up: LichenProcess) -> None:
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": SYSTEM * 8}],
        "max_tokens": 4,
    }
    r = httpx.post(f"{up.url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert f"{CTX} tokens" in error["message"] and "LICHEN_CTX_SIZE" in error["message"]


def test_a_prompt_that_fits_only_the_larger_node_is_routed_there(harness: Harness) -> None:
    """Two real nodes: ``small`` holds 1024 tokens a request, ``large`` 4096."""
    tracker = harness.start(
        "tracker",
        ["tracker", "--public", "--port", "{port}", "--data-dir", "{data_dir}"],
        env=NO_ANONYMOUS_LIMITS
        | {
            "LICHEN_OPERATOR_SURFACES": "open",
            "LICHEN_FIRST_TOKEN_TIMEOUT_S": "900",
            "LICHEN_REQUEST_TIMEOUT_S": "900",
        },
        ready=HttpReady("/v1/network"),
    )
    assert tracker.data_dir is not None
    create = ["invite", "create", "--max-uses", "0", "--data-dir", str(tracker.data_dir)]
    invite = subprocess.run(
        [*lichen_argv(), *create],
        env=scrubbed_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    for name, slots, ctx in (("small", "2", "2048"), ("large", "1", "4096")):
        harness.start(
            name,
            [
                *("node", "--data-dir", "{data_dir}", "--name", name, "--join", invite),
                *("--model", DEFAULT_MODEL, "--parallel", slots, "--ctx-size", ctx),
            ],
            env={"LICHEN_ENGINE_STALL_S": "900"},  # a long prompt's prefill is not a stall
            ready=None,
        )
    peers: dict[str, str] = {}
    deadline = time.monotonic() + 180
    while len(peers) < 2:
        assert time.monotonic() < deadline, "\n".join(p.tail(12) for p in harness.processes)
        view = httpx.get(f"{tracker.url}/v1/network", timeout=10).json()
        peers = {n["name"]: n["peer_id"] for n in view["nodes"]}
        time.sleep(0.2)
    card = httpx.get(f"{tracker.url}/v1/models/{DEFAULT_MODEL}", timeout=30).json()
    assert card["context_length"] == 4096, card
    # ~2,200 real tokens; at least 1,166 by the gateway's lower bound: over small's 1024
    long = {"role": "user", "content": SYSTEM[:7000] + "\nSummarize the rules."}
    body = {"model": DEFAULT_MODEL, "messages": [long], "max_tokens": 4, "temperature": 0}
    for _ in range(2):
        r = httpx.post(f"{tracker.url}/v1/chat/completions", json=body, timeout=600)
        assert r.status_code == 200, r.text
        assert r.headers["x-lichen-node"] == peers["large"], (r.headers, peers)
        assert r.json()["usage"]["prompt_tokens"] > 1024
    too_long = {"role": "user", "content": SYSTEM * 2}  # over 4096 by the lower bound alone
    r = httpx.post(
        f"{tracker.url}/v1/chat/completions",
        json=body | {"messages": [too_long]},
        timeout=120,
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and "4096 tokens" in error["message"]


def test_agent_turns_reuse_the_cached_prefix(oai: OpenAI) -> None:
    """Turns 2-5 of an agent conversation (tools, calls and their results re-sent each
    turn) process only their new tokens: the node's report, through the gateway."""
    messages: list[Any] = [{"role": "system", "content": SYSTEM[:8000]}]
    seen: list[tuple[int, int]] = []  # (prompt tokens, cached prompt tokens) per turn
    for turn in range(5):
        messages.append({"role": "user", "content": f"Step {turn}: {ASK}"})
        reply = oai.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=messages,
            tools=cast(Any, TOOLS),
            max_tokens=48,
            temperature=0,
        )
        usage = reply.usage
        assert usage is not None
        details = usage.prompt_tokens_details
        seen.append((usage.prompt_tokens, (details.cached_tokens or 0) if details else 0))
        message = reply.choices[0].message
        calls = [c for c in message.tool_calls or () if c.type == "function"]
        if calls:  # the agent runs the tool and sends its result with the next turn
            call = {"name": calls[0].function.name, "arguments": calls[0].function.arguments}
            messages.append(
                {
                    "role": "assistant",
                    "tool_calls": [{"id": calls[0].id, "type": "function", "function": call}],
                }
            )
            messages.append(
                {"role": "tool", "tool_call_id": calls[0].id, "content": f"result {turn}"}
            )
        else:
            messages.append({"role": "assistant", "content": message.content or "ok"})
    assert seen[0][0] > 1000, seen
    for before, (prompt, cached) in itertools.pairwise(seen):
        assert prompt > before[0], seen
        assert cached >= before[0] - 64, seen  # the previous turn's prompt came from the cache
        assert prompt - cached <= 0.2 * prompt, seen
