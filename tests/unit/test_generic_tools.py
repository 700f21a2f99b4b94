"""Generic tool calls for templates without tool support (lichen.engines.generic_tools),
and the prompt-cache count in OpenAI's usage shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lichen.engines import generic_tools
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.answer import total_usage
from lichen.gateway.dialects.openai_responses import _usage as responses_usage
from lichen.gateway.responses import usage_body
from lichen.wire.messages import Usage

TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "write", "description": "w"}},
]


def _names(schema: dict[str, Any]) -> list[str]:
    branches = schema.get("anyOf", [schema])
    out = []
    for b in branches:
        call = b["properties"].get("tool_call")
        out.append(call["properties"]["name"]["const"] if call else "<response>")
    return out


def test_auto_allows_every_tool_or_a_response() -> None:
    assert _names(generic_tools.answer_schema(TOOLS, "auto")) == ["read", "write", "<response>"]


def test_required_drops_the_response_branch() -> None:
    assert _names(generic_tools.answer_schema(TOOLS, "required")) == ["read", "write"]


def test_named_function_keeps_only_that_tool() -> None:
    choice = {"type": "function", "function": {"name": "write"}}
    schema = generic_tools.answer_schema(TOOLS, choice)
    assert _names(schema) == ["write"]
    assert schema["properties"]["tool_call"]["properties"]["arguments"] == {"type": "object"}


def test_none_allows_only_a_response() -> None:
    assert _names(generic_tools.answer_schema(TOOLS, "none")) == ["<response>"]


def test_hostile_tools_never_crash_and_fall_back_to_text() -> None:
    junk: list[Any] = [None, 3, "x", {"function": "nope"}, {"function": {"name": 5}}]
    assert _names(generic_tools.answer_schema(junk, "required")) == ["<response>"]


@pytest.mark.parametrize(
    "choice",
    [
        "sometimes",
        "",
        5,
        ["required"],
        {"type": "function"},
        {"type": "function", "function": "read"},
        {"type": "function", "function": {"name": 5}},
        {"type": "function", "function": {"name": "missing"}},
        {"type": "tool", "function": {"name": "read"}},
    ],
)
def test_a_bad_tool_choice_is_refused_as_the_native_path_refuses_it(choice: Any) -> None:
    with pytest.raises(LichenError) as caught:
        generic_tools.answer_schema(TOOLS, choice)
    assert caught.value.code is ErrorCode.INVALID_REQUEST and caught.value.param == "tool_choice"
    body: dict[str, Any] = {"messages": [], "tools": TOOLS, "tool_choice": choice}
    with pytest.raises(LichenError):
        generic_tools.apply(body)


def test_apply_rewrites_tool_turns_and_sets_the_schema() -> None:
    body: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "read", "arguments": '{"p": 1}'},
                    }
                ],
            },
            {"role": "tool", "content": "file text", "tool_call_id": "c1"},
        ],
        "tools": TOOLS,
        "tool_choice": "required",
        "response_format": {"type": "json_object"},
    }
    generic_tools.apply(body)
    assert "tools" not in body and "tool_choice" not in body
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert body["messages"][0]["content"].startswith("be brief")
    assert '"name": "read"' in body["messages"][0]["content"].replace('":"', '": "')
    assert json.loads(body["messages"][2]["content"]) == {
        "tool_call": {"name": "read", "arguments": {"p": 1}}
    }
    assert json.loads(body["messages"][3]["content"])["tool_response"]["content"] == "file text"
    schema = body["response_format"]["json_schema"]["schema"]
    assert _names(schema) == ["read", "write"]


def test_apply_adds_a_system_message_when_there_is_none() -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    generic_tools.apply(body)
    assert body["messages"][0]["role"] == "system"
    assert _names(body["response_format"]["json_schema"]["schema"])[-1] == "<response>"


def test_parse_tool_call_into_openai_delta() -> None:
    text, calls = generic_tools.parse('{"tool_call": {"name": "read", "arguments": {"p": 2}}}')
    assert text == ""
    assert len(calls) == 1
    call = calls[0]
    assert call["type"] == "function" and call["index"] == 0 and call["id"].startswith("call_")
    assert call["function"]["name"] == "read"
    assert json.loads(call["function"]["arguments"]) == {"p": 2}


def test_parse_response_and_hostile_output() -> None:
    assert generic_tools.parse('{"response": "hello"}') == ("hello", [])
    assert generic_tools.parse('{"tool_call": {"name": "re') == ('{"tool_call": {"name": "re', [])
    assert generic_tools.parse("[1, 2]") == ("[1, 2]", [])
    assert generic_tools.parse('{"response": 5}') == ('{"response": 5}', [])


def test_cached_prompt_tokens_reach_openais_usage_shape_bounded() -> None:
    assert "prompt_tokens_details" not in usage_body(Usage(10, 2))
    body = usage_body(total_usage([Usage(100, 2, cached_tokens=90), Usage(50, 1)]))
    assert body["prompt_tokens"] == 150 and body["prompt_tokens_details"] == {"cached_tokens": 90}
    lying = usage_body(Usage(10, 2, cached_tokens=10_000))  # a node's claim is bounded
    assert lying["prompt_tokens_details"] == {"cached_tokens": 10}


def test_cached_prompt_tokens_reach_the_responses_usage_shape_bounded() -> None:
    details = responses_usage(Usage(100, 2, cached_tokens=90))["input_tokens_details"]
    assert details == {"cached_tokens": 90}
    lying = responses_usage(Usage(10, 2, cached_tokens=10_000))["input_tokens_details"]
    assert lying == {"cached_tokens": 10}


def _stream(chunks: list[str]) -> tuple[list[str], tuple[str, list[dict[str, Any]]]]:
    stream = generic_tools.AnswerStream()
    sent = [stream.feed(chunk) for chunk in chunks]
    return sent, stream.finish()


def test_a_text_answer_streams_as_it_is_decoded() -> None:
    sent, rest = _stream(['{"', "response", '": "', "Hel", "lo", " wor", 'ld"', "}"])
    assert sent == ["", "", "", "Hel", "lo", " wor", "ld", ""]
    assert rest == ("", [])


def test_escapes_cut_by_chunk_boundaries_are_decoded_whole() -> None:
    raw = json.dumps({"response": 'a "q" \\ line\nend \u00e9 \U0001f600 \t.'})
    for size in (1, 2, 3, 5, 7):
        sent, _ = _stream([raw[i : i + size] for i in range(0, len(raw), size)])
        assert "".join(sent) == 'a "q" \\ line\nend \u00e9 \U0001f600 \t.', size
    sent, _ = _stream(['{ "response" :\n "x', '\\ud83d!"}'])  # a lone surrogate
    assert "".join(sent) == "x\ufffd!"


def test_a_tool_call_is_held_and_parsed_whole() -> None:
    raw = '{"tool_call": {"name": "read", "arguments": {"p": "{\\"response\\": \\"x\\"}"}}}'
    sent, (text, calls) = _stream([raw[i : i + 4] for i in range(0, len(raw), 4)])
    assert set(sent) == {""} and text == ""
    assert calls[0]["function"]["name"] == "read"
    assert json.loads(calls[0]["function"]["arguments"]) == {"p": '{"response": "x"}'}


def test_an_answer_cut_short_keeps_what_was_streamed_or_returns_raw_text() -> None:
    sent, rest = _stream(['{"response": "half an ans'])  # max_tokens hit inside the text
    assert sent == ["half an ans"] and rest == ("", [])
    sent, rest = _stream(['{"tool_call": {"name": "re'])
    assert sent == [""] and rest == ('{"tool_call": {"name": "re', [])
    sent, rest = _stream(["not json at all"])
    assert sent == [""] and rest == ("not json at all", [])
