"""Tool calls for models whose chat template has none ("generic" tool support).

Mirrors llama.cpp's generic chat format, done here so that it works whatever the
wheel's own detection does (measured: the bundled llama.cpp ignores ``tools`` for
SmolLM2's template and answers with free text). The tools are described in a
system message and the output is constrained by a JSON schema (llama.cpp turns it
into a grammar) to exactly one of::

    {"tool_call": {"name": "<one of the tools>", "arguments": {...}}}
    {"response": "<text for the user>"}

``tool_choice`` narrows the schema: ``required`` drops the ``response`` branch, a
named function keeps only that tool, ``none`` keeps only the response (the gateway
normally drops the tools instead); anything else, or a name not among the tools, is
refused (``invalid_request_error``, as llama.cpp does for native templates). Earlier
turns are rewritten the same way (assistant tool calls as the JSON the model would
have written, tool results as user messages), so a multi-turn agent conversation
renders with any template. The answer is parsed back into OpenAI's ``tool_calls``
delta shape.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from lichen.errors import ErrorCode, LichenError

_INSTRUCTIONS = (
    "You can call tools. Respond only with JSON: either "
    '{"tool_call": {"name": ..., "arguments": {...}}} to call one of the tools below, '
    'or {"response": "..."} to answer the user directly.\n\nTools:\n'
)


def _functions(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
            fn = tool["function"]
            if isinstance(fn.get("name"), str):
                out.append(fn)
    return out


def _chosen(functions: list[dict[str, Any]], tool_choice: Any) -> tuple[list[dict[str, Any]], bool]:
    """The functions the answer may call and whether a plain response is allowed.

    An unknown ``tool_choice``, or one naming a function that is not among the tools,
    is refused as llama.cpp refuses it for native templates (400, never a guess).
    """
    if tool_choice is None or tool_choice == "auto":
        return functions, True
    if tool_choice == "required":
        return functions, False
    if tool_choice == "none":
        return [], True  # text only (the gateway normally drops the tools instead)
    name = None
    if isinstance(tool_choice, dict) and tool_choice.get("type", "function") == "function":
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise _invalid("tool_choice must be auto, none, required or {type: function, function}")
    named = [f for f in functions if f["name"] == name]
    if not named:
        raise _invalid("tool_choice names a function that is not among the tools")
    return named, False


def _invalid(message: str) -> LichenError:
    return LichenError(ErrorCode.INVALID_REQUEST, message, param="tool_choice")


def answer_schema(tools: list[Any], tool_choice: Any) -> dict[str, Any]:
    """The JSON schema an answer must match for these tools and ``tool_choice``."""
    functions, free = _chosen(_functions(tools), tool_choice)
    branches: list[dict[str, Any]] = []
    for fn in functions:
        params = fn.get("parameters")
        call = {
            "type": "object",
            "properties": {
                "name": {"const": fn["name"]},
                "arguments": params if isinstance(params, dict) else {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        branches.append(
            {"type": "object", "properties": {"tool_call": call}, "required": ["tool_call"]}
        )
    if free or not branches:
        branches.append(
            {
                "type": "object",
                "properties": {"response": {"type": "string"}},
                "required": ["response"],
            }
        )
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _describe(tools: list[Any]) -> str:
    lines = []
    for fn in _functions(tools):
        entry = {"name": fn["name"], "description": fn.get("description", "")}
        entry["parameters"] = fn.get("parameters") or {}
        lines.append(json.dumps(entry, separators=(",", ":")))
    return "\n".join(lines)


def _rewrite(message: dict[str, Any]) -> dict[str, Any]:
    """One earlier turn in a form every template renders (no tool roles or fields)."""
    role = message.get("role")
    if role == "assistant" and message.get("tool_calls"):
        calls = [
            {
                "tool_call": {
                    "name": (c.get("function") or {}).get("name", ""),
                    "arguments": _arguments((c.get("function") or {}).get("arguments")),
                }
            }
            for c in message["tool_calls"]
            if isinstance(c, dict)
        ]
        text = "\n".join(json.dumps(c) for c in calls)
        return {"role": "assistant", "content": text}
    if role == "tool":
        result = {"tool_response": {"content": message.get("content") or ""}}
        if message.get("name"):
            result["tool_response"]["tool"] = message["name"]
        return {"role": "user", "content": json.dumps(result)}
    return {"role": role, "content": message.get("content") or ""}


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw if raw is not None else {}


def apply(body: dict[str, Any]) -> None:
    """Rewrite an engine request that has ``tools`` for generic tool handling (in place)."""
    tools = body.pop("tools", None) or []
    tool_choice = body.pop("tool_choice", "auto")
    body.pop("response_format", None)  # the tool schema takes its place
    messages = [_rewrite(m) for m in body.get("messages") or ()]
    system = _INSTRUCTIONS + _describe(tools)
    if messages and messages[0].get("role") == "system":
        messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{system}"}
    else:
        messages.insert(0, {"role": "system", "content": system})
    body["messages"] = messages
    schema = answer_schema(tools, tool_choice)
    body["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}


def parse(text: str) -> tuple[str, list[dict[str, Any]]]:
    """The generated JSON as (text, OpenAI tool-call deltas); text as-is if it is not JSON.

    Output cut short (``max_tokens``) is not valid JSON and comes back as text.
    """
    try:
        value = json.loads(text)
    except ValueError:
        return text, []
    if isinstance(value, dict) and isinstance(value.get("tool_call"), dict):
        call = value["tool_call"]
        arguments = call.get("arguments", {})
        delta = {
            "index": 0,
            "id": f"call_{secrets.token_hex(12)}",
            "type": "function",
            "function": {"name": str(call.get("name", "")), "arguments": json.dumps(arguments)},
        }
        return "", [delta]
    if isinstance(value, dict) and isinstance(value.get("response"), str):
        return value["response"], []
    return text, []


_HEAD = re.compile(r'\s*\{\s*"response"\s*:\s*"')
_HEAD_COMPACT = '{"response":"'


class AnswerStream:
    """A generic answer as it is generated: the text of ``{"response": "..."}`` is
    streamed as soon as it is decoded (so a long text answer has a first token early);
    a tool call, or anything else, is held and parsed whole by :meth:`finish`."""

    def __init__(self) -> None:
        self._raw: list[str] = []
        self._state = "head"  # head: undecided; text: inside the response; done: after it
        self._pending = ""  # an escape sequence cut by a chunk boundary
        self.streamed = False

    def feed(self, chunk: str) -> str:
        """The text to send now for this chunk of raw output (maybe ``""``)."""
        self._raw.append(chunk)
        if self._state == "head":
            joined = "".join(self._raw)
            match = _HEAD.match(joined)
            if match is not None:
                self._state, self.streamed = "text", True
                return self._decode(joined[match.end() :])
            compact = "".join(joined.split())
            if not _HEAD_COMPACT.startswith(compact):
                self._state = "held"
            return ""
        return self._decode(chunk) if self._state == "text" else ""

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """What is left to send once the output is complete: (text, tool-call deltas)."""
        if self.streamed:
            return "", []  # the text went out already (also when cut by max_tokens)
        return parse("".join(self._raw))

    def _decode(self, data: str) -> str:
        data, self._pending = self._pending + data, ""
        out: list[str] = []
        i = 0
        while i < len(data):
            char = data[i]
            if char == '"':
                self._state = "done"
                break
            if char != "\\":
                out.append(char)
                i += 1
                continue
            size = _escape_size(data, i)
            if size == 0:  # incomplete: wait for the next chunk
                self._pending = data[i:]
                break
            out.append(_unescape(data[i : i + size]))
            i += size
        return "".join(out)


def _escape_size(data: str, i: int) -> int:
    """Length of the escape sequence at ``data[i]`` (a backslash), 0 if it is cut short."""
    rest = data[i:]
    if len(rest) < 2:
        return 0
    if rest[1] != "u":
        return 2
    if len(rest) < 6:
        return 0
    if not 0xD800 <= _hex(rest[2:6]) <= 0xDBFF:
        return 6
    low = rest[6:12]  # a high surrogate pairs with the \uDC00-\uDFFF after it
    if len(low) < 6 and "\\u".startswith(low[:2]):
        return 0
    return 12 if low.startswith("\\u") else 6


def _hex(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        return -1


def _unescape(sequence: str) -> str:
    """One JSON escape sequence as text (a lone surrogate becomes U+FFFD)."""
    try:
        value: str = json.loads(f'"{sequence}"')
    except ValueError:
        return sequence  # not valid JSON (the grammar does not let it through)
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
