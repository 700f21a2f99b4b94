"""Anthropic Messages request bodies (``POST /v1/messages``), translated to the wire.

System prompt, text / ``tool_use`` / ``tool_result`` content blocks, tools and
``tool_choice``, ``stop_sequences``, ``max_tokens``, sampling. Images, documents
and extended thinking are refused with a 400 naming the parameter.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lichen.errors import ErrorCode, LichenError
from lichen.wire.messages import ChatMessage, GenerationRequest, SamplingParams


class Block(BaseModel):
    """One content block: ``text``, ``tool_use`` or ``tool_result`` (others are refused)."""

    model_config = ConfigDict(extra="allow")

    type: Annotated[str, Field(max_length=64)]
    text: str | None = None  # text
    id: Annotated[str, Field(max_length=256)] | None = None  # tool_use
    name: Annotated[str, Field(max_length=256)] | None = None  # tool_use
    input: dict[str, Any] | None = None  # tool_use
    tool_use_id: Annotated[str, Field(max_length=256)] | None = None  # tool_result
    content: str | list[Block] | None = None  # tool_result
    is_error: bool | None = None  # tool_result


class AnthropicMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str | Annotated[list[Block], Field(max_length=1024)]


class SystemBlock(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str


class AnthropicTool(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(min_length=1, max_length=256)]
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["auto", "any", "tool", "none"]
    name: Annotated[str, Field(max_length=256)] | None = None


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    user_id: Annotated[str, Field(max_length=512)] | None = None


class MessagesRequest(BaseModel):
    """Anthropic's ``POST /v1/messages`` body."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    max_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)]
    messages: Annotated[list[AnthropicMessage], Field(min_length=1)]
    system: str | list[SystemBlock] | None = None
    stop_sequences: Annotated[list[str], Field(max_length=64)] | None = None
    stream: bool = False
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None  # accepted; nodes sample with top_p
    tools: Annotated[list[AnthropicTool], Field(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None

    @property
    def wants_tools(self) -> bool:
        return bool(self.tools) and not (self.tool_choice and self.tool_choice.type == "none")

    def to_wire(self, model: str) -> GenerationRequest:
        if self.model_extra and self.model_extra.get("thinking"):
            raise _invalid("extended thinking is not supported on this network", "thinking")
        messages: list[ChatMessage] = []
        if self.system:
            text = (
                self.system
                if isinstance(self.system, str)
                else "\n".join(b.text for b in self.system)
            )
            messages.append(ChatMessage(role="system", content=text))
        for index, message in enumerate(self.messages):
            messages.extend(_wire_messages(message, f"messages.{index}.content"))
        tools = tool_choice = None
        if self.wants_tools:
            tools = json.dumps([_openai_tool(t) for t in self.tools or ()])
            tool_choice = _openai_tool_choice(self.tool_choice)
        return GenerationRequest(
            kind="chat",
            model=model,
            messages=messages,
            params=SamplingParams(
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                stop=list(self.stop_sequences or ()),
                tools=tools,
                tool_choice=tool_choice,
            ),
        )


def _invalid(message: str, param: str) -> LichenError:
    return LichenError(ErrorCode.INVALID_REQUEST, message, param=param)


def _block_text(content: str | list[Block] | None, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if block.type != "text" or block.text is None:
            raise _invalid(f"content blocks of type {block.type!r} are not supported here", param)
        parts.append(block.text)
    return "".join(parts)


def _wire_messages(message: AnthropicMessage, param: str) -> list[ChatMessage]:
    if isinstance(message.content, str):
        return [ChatMessage(role=message.role, content=message.content)]
    out: list[ChatMessage] = []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "text" and block.text is not None:
            texts.append(block.text)
        elif block.type == "tool_use" and message.role == "assistant":
            if not block.id or not block.name:
                raise _invalid("a tool_use block needs an id and a name", param)
            arguments = json.dumps(block.input or {})
            calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": arguments},
                }
            )
        elif block.type == "tool_result" and message.role == "user":
            if not block.tool_use_id:
                raise _invalid("a tool_result block needs a tool_use_id", param)
            result = _block_text(block.content, param)
            out.append(ChatMessage(role="tool", content=result, tool_call_id=block.tool_use_id))
        else:
            raise _invalid(
                f"content blocks of type {block.type!r} are not supported in "
                f"{message.role} messages on this network",
                param,
            )
    if texts or calls or not out:
        out.append(
            ChatMessage(
                role=message.role,
                content="".join(texts),
                tool_calls=json.dumps(calls) if calls else None,
            )
        )
    return out


def _openai_tool(tool: AnthropicTool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _openai_tool_choice(choice: ToolChoice | None) -> str | None:
    if choice is None or choice.type == "auto":
        return None
    if choice.type == "any":
        return json.dumps("required")
    if not choice.name:
        raise _invalid("tool_choice of type 'tool' needs a name", "tool_choice.name")
    return json.dumps({"type": "function", "function": {"name": choice.name}})
