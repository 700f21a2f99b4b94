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
from lichen.wire.messages import ChatMessage, GenerationRequest, SamplingParams

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = None

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
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    user: str | None = None

    def _stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Common):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
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
            ),
        )


def _wire_message(m: Message) -> ChatMessage:
    extra = m.model_extra or {}
    calls = extra.get("tool_calls")
    call_id = extra.get("tool_call_id")
    return ChatMessage(
        role=m.role,
        content=m.text(),
        name=m.name,
        tool_calls=json.dumps(calls) if isinstance(calls, list) and calls else None,
        tool_call_id=str(call_id) if call_id else None,
    )


class CompletionRequest(_Common):
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
            ),
        )
