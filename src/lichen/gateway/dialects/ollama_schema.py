"""Ollama's request bodies (``/api/chat``, ``/api/generate``, ``/api/show``, ``/api/embed``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Options(BaseModel):
    """Ollama's ``options``; the ones a network node honours are mapped, the rest ignored."""

    model_config = ConfigDict(extra="allow")

    temperature: Annotated[float, Field(ge=0)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    num_predict: int | None = None  # -1: no limit, -2: fill the context
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class OllamaMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    stream: bool = True
    format: str | dict[str, Any] | None = None  # "json" or a JSON schema
    options: Options | None = None


class ChatBody(_Common):
    messages: list[OllamaMessage] = []
    tools: list[dict[str, Any]] | None = None


class GenerateBody(_Common):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    images: list[str] | None = None


class ShowBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    name: str | None = None  # older clients


class LegacyEmbedBody(BaseModel):
    """``/api/embeddings`` (Ollama's older endpoint): one prompt, one vector."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    prompt: Annotated[str, Field(min_length=1)]


class EmbedBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: str | Annotated[list[str], Field(min_length=1, max_length=256)]
    dimensions: Annotated[int, Field(ge=1)] | None = None
