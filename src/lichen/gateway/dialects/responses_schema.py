"""OpenAI Responses request bodies (``POST /v1/responses``), translated to the wire.

Input is a string or a list of items: messages (``input_text`` /
``output_text`` parts), ``function_call`` and ``function_call_output`` items.
``instructions`` becomes the system message; ``text.format`` maps to
``response_format``; function tools use the Responses (flat) shape.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lichen.errors import ErrorCode, LichenError
from lichen.wire.messages import ChatMessage, GenerationRequest, SamplingParams

MAX_ITEMS = 1024


class InputItem(BaseModel):
    """A message, ``function_call`` or ``function_call_output`` item."""

    model_config = ConfigDict(extra="allow")

    type: Annotated[str, Field(max_length=64)] = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[dict[str, Any]] | None = None
    call_id: Annotated[str, Field(max_length=256)] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    arguments: str | None = None
    output: str | list[dict[str, Any]] | None = None


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["function"]
    name: Annotated[str, Field(min_length=1, max_length=256)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: Annotated[str, Field(max_length=256)] | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: TextFormat | None = None


class ResponsesRequest(BaseModel):
    """OpenAI's ``POST /v1/responses`` body."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: str | Annotated[list[InputItem], Field(min_length=1, max_length=MAX_ITEMS)]
    instructions: str | None = None
    stream: bool = False
    max_output_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=128)] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextOptions | None = None
    store: bool | None = None  # None: not stored (see docs/api.md)
    previous_response_id: Annotated[str, Field(max_length=256)] | None = None
    metadata: dict[str, str] | None = None
    user: Annotated[str, Field(max_length=512)] | None = None

    @property
    def wants_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    def items(self) -> list[InputItem]:
        if isinstance(self.input, str):
            return [InputItem(role="user", content=self.input)]
        return list(self.input)

    def to_wire(self, model: str, history: list[ChatMessage] | None = None) -> GenerationRequest:
        messages: list[ChatMessage] = []
        if self.instructions:
            messages.append(ChatMessage(role="system", content=self.instructions))
        messages.extend(history or ())
        messages.extend(input_messages(self.items()))
        tools = tool_choice = None
        choice = _openai_tool_choice(self.tool_choice) if self.tool_choice is not None else None
        if self.wants_tools:
            tools = json.dumps([_openai_tool(t) for t in self.tools or ()])
            if choice is not None:
                tool_choice = json.dumps(choice)
        return GenerationRequest(
            kind="chat",
            model=model,
            messages=messages,
            params=SamplingParams(
                max_tokens=self.max_output_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                response_format=self._response_format(),
                tools=tools,
                tool_choice=tool_choice,
            ),
        )

    def _response_format(self) -> str | None:
        fmt = self.text.format if self.text is not None else None
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return json.dumps({"type": "json_object"})
        if fmt.schema_ is None:
            raise _invalid("text.format of type json_schema needs a schema", "text.format.schema")
        wrapper = {"name": fmt.name or "response", "schema": fmt.schema_, "strict": fmt.strict}
        return json.dumps({"type": "json_schema", "json_schema": wrapper})


def _invalid(message: str, param: str) -> LichenError:
    return LichenError(ErrorCode.INVALID_REQUEST, message, param=param)


def _parts_text(content: str | list[dict[str, Any]] | None, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        kind = part.get("type")
        text = part.get("text")
        if kind not in ("input_text", "output_text", "text") or not isinstance(text, str):
            raise _invalid(f"content parts of type {kind!r} are not supported; send text", param)
        texts.append(text)
    return "".join(texts)


def input_messages(items: list[InputItem]) -> list[ChatMessage]:
    """The conversation the input items describe, as wire chat messages."""
    messages: list[ChatMessage] = []
    for index, item in enumerate(items):
        param = f"input.{index}"
        if item.type == "message":
            if item.role is None:
                raise _invalid("a message item needs a role", f"{param}.role")
            role = "system" if item.role == "developer" else item.role
            messages.append(ChatMessage(role=role, content=_parts_text(item.content, param)))
        elif item.type == "function_call":
            if not item.call_id or not item.name:
                raise _invalid("a function_call item needs call_id and name", param)
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments or "{}"},
            }
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant" and last.tool_calls:
                calls = [*json.loads(last.tool_calls), call]  # parallel calls: one message
                messages[-1] = ChatMessage(
                    role="assistant", content=last.content, tool_calls=json.dumps(calls)
                )
            else:
                messages.append(
                    ChatMessage(role="assistant", content="", tool_calls=json.dumps([call]))
                )
        elif item.type == "function_call_output":
            if not item.call_id:
                raise _invalid("a function_call_output item needs call_id", param)
            output = _parts_text(item.output, f"{param}.output")
            messages.append(ChatMessage(role="tool", content=output, tool_call_id=item.call_id))
        else:
            raise _invalid(f"input items of type {item.type!r} are not supported", param)
    return messages


def _openai_tool(tool: FunctionTool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = tool.parameters
    return {"type": "function", "function": function}


def _openai_tool_choice(choice: str | dict[str, Any]) -> Any:
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise _invalid("tool_choice must be auto, none, required or a function", "tool_choice")
        return choice
    if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
        raise _invalid("tool_choice must name a function: {type: function, name}", "tool_choice")
    return {"type": "function", "function": {"name": choice["name"]}}
