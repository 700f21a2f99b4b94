"""OpenAI request bodies, validated at the edge and turned into wire requests.

Unknown fields are accepted and ignored (clients send many); fields we do not
support with a value that would change the answer (``n > 1``) are refused with a
400 that names the parameter.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lichen.errors import ErrorCode, LichenError
from lichen.gateway.choices import MAX_CHOICES, MAX_TOP_LOGPROBS
from lichen.wire.messages import ChatMessage, GenerationRequest, SamplingParams

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


# Integers are bounded here only to what the wire can carry; the configured limits
# (``lichen.gateway.limits``) apply to every dialect after parsing.
_WIRE_INT = 2**63 - 1
Count = Annotated[int, Field(ge=1, le=_WIRE_INT)]


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: Annotated[str, Field(max_length=256)]
    arguments: str | dict[str, Any] = ""

    def arguments_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


class ToolCall(BaseModel):
    """One tool call an assistant message made (sent back in the conversation)."""

    model_config = ConfigDict(extra="allow")
    id: Annotated[str, Field(max_length=256)] = ""
    type: Literal["function"] = "function"
    function: FunctionCall

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "function": {"name": self.function.name, "arguments": self.function.arguments_text()},
        }


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[TextPart] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=128)] | None = None
    tool_call_id: Annotated[str, Field(max_length=256)] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise LichenError(
                    ErrorCode.INVALID_REQUEST,
                    f"content parts of type {part.type!r} are not supported; send text",
                    param="messages",
                )
            parts.append(part.text)
        return "".join(parts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Count | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: Annotated[int, Field(ge=-_WIRE_INT - 1, le=_WIRE_INT)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None  # parallel choices (h6)
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    user: Annotated[str, Field(max_length=512)] | None = None

    def _stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Common):
    logprobs: bool = False  # token log probabilities in the answer (h6)
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Count | None = None
    response_format: dict[str, Any] | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None
    tool_choice: str | dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") not in ("text", "json_object", "json_schema"):
            raise ValueError("response_format.type must be text, json_object or json_schema")
        return value

    @field_validator("tools")
    @classmethod
    def _tool_shape(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for tool in value or ():
            if tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
                raise ValueError("each tool must be {'type': 'function', 'function': {...}}")
        return value

    @property
    def wants_tools(self) -> bool:
        """Whether answering needs a model that takes tools (``tool_choice: none`` does not)."""
        return bool(self.tools) and self.tool_choice != "none"

    def to_wire(self, model: str) -> GenerationRequest:
        limit = self.max_completion_tokens or self.max_tokens
        return GenerationRequest(
            kind="chat",
            model=model,
            messages=[_wire_message(m) for m in self.messages],
            params=SamplingParams(
                max_tokens=limit,
                temperature=self.temperature,
                top_p=self.top_p,
                stop=self._stops(),
                seed=self.seed,
                response_format=json.dumps(self.response_format) if self.response_format else None,
                presence_penalty=self.presence_penalty,
                frequency_penalty=self.frequency_penalty,
                tools=json.dumps(self.tools) if self.wants_tools else None,
                tool_choice=(
                    json.dumps(self.tool_choice)
                    if self.wants_tools and self.tool_choice is not None
                    else None
                ),
                logprobs=(self.top_logprobs or 0) if self.logprobs else None,  # (h6)
            ),
        )


def _wire_message(m: Message) -> ChatMessage:
    calls = [call.wire() for call in m.tool_calls or ()]
    return ChatMessage(
        role=m.role,
        content=m.text(),
        name=m.name,
        tool_calls=json.dumps(calls) if calls else None,
        tool_call_id=m.tool_call_id or None,
    )


class CompletionRequest(_Common):
    logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None  # (h6)
    best_of: Annotated[int, Field(ge=1, le=1)] | None = None  # refused above 1 (h6)
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    echo: bool = False

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    def to_wire(self, model: str) -> GenerationRequest:
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return GenerationRequest(
            kind="completion",
            model=model,
            prompt=prompt,
            params=SamplingParams(
                max_tokens=self.max_tokens if self.max_tokens is not None else 16,
                temperature=self.temperature,
                top_p=self.top_p,
                stop=self._stops(),
                seed=self.seed,
                presence_penalty=self.presence_penalty,
                frequency_penalty=self.frequency_penalty,
                logprobs=self.logprobs,  # (h6)
            ),
        )
