"""An Ollama-compatible API, so Ollama clients and tools work against a Lichen gateway.

``GET /api/tags``, ``POST /api/chat``, ``POST /api/generate`` (NDJSON streams by
default, one object with ``"stream": false``), ``POST /api/show``, ``POST
/api/embed`` (and the older ``/api/embeddings``) and ``GET /api/version``.
Requests are translated into the same wire request the OpenAI routes build and
go through the same
:class:`~lichen.gateway.completions.CompletionService` (routing, failover,
resume, request log, metrics); only the shapes differ. Errors are Ollama's
``{"error": "..."}`` with the HTTP status, and an error after the stream has
started is a final ``{"error": ...}`` line, as Ollama does.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from lichen import __version__
from lichen.engines.base import Delta, EngineEvent
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.completions import NODE_HEADER, CompletionService, Outcome, Routed, read_body
from lichen.gateway.embeddings import EmbeddingService
from lichen.gateway.errors import from_validation
from lichen.gateway.responses import merge_tool_calls
from lichen.routing.capabilities import any_supports
from lichen.tracker.registry import Registry
from lichen.wire.messages import ChatMessage, GenerationRequest, ModelInfo, SamplingParams, Usage
from lichen.wire.vectors import unpack_vector

OLLAMA_API_VERSION = "0.6.0"  # the Ollama API generation these routes follow
NDJSON = "application/x-ndjson"


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


def ollama_error(error: LichenError) -> JSONResponse:
    return JSONResponse({"error": error.message}, status_code=error.http_status)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _params(common: _Common, tools: list[dict[str, Any]] | None = None) -> SamplingParams:
    o = common.options or Options()
    stop = [o.stop] if isinstance(o.stop, str) else list(o.stop or [])
    fmt: dict[str, Any] | None = None
    if common.format == "json":
        fmt = {"type": "json_object"}
    elif isinstance(common.format, dict):
        fmt = {"type": "json_schema", "json_schema": {"name": "format", "schema": common.format}}
    elif common.format not in (None, ""):
        raise LichenError(
            ErrorCode.INVALID_REQUEST, "format must be 'json' or a JSON schema", param="format"
        )
    return SamplingParams(
        max_tokens=o.num_predict if o.num_predict is not None and o.num_predict > 0 else None,
        temperature=o.temperature,
        top_p=o.top_p,
        stop=stop,
        seed=o.seed,
        response_format=json.dumps(fmt) if fmt else None,
        presence_penalty=o.presence_penalty,
        frequency_penalty=o.frequency_penalty,
        tools=json.dumps(tools) if tools else None,
    )


def _wire_message(m: OllamaMessage) -> ChatMessage:
    if m.images:
        raise LichenError(
            ErrorCode.INVALID_REQUEST, "images are not supported on this network", param="images"
        )
    calls = None
    if m.tool_calls:
        calls = json.dumps(
            [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {
                        "name": (c.get("function") or {}).get("name", ""),
                        "arguments": json.dumps((c.get("function") or {}).get("arguments") or {}),
                    },
                }
                for i, c in enumerate(m.tool_calls)
            ]
        )
    return ChatMessage(role=m.role, content=m.content, name=m.tool_name, tool_calls=calls)


def _ollama_tool_calls(openai_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for call in openai_calls:
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = {}
        out.append({"function": {"name": function.get("name", ""), "arguments": arguments}})
    return out


def _stats(outcome: Outcome, usage: Usage) -> dict[str, int]:
    total_ns = int((time.perf_counter() - outcome.started) * 1e9)
    ttft_ns = (outcome.ttft_ms or 0) * 1_000_000
    return {
        "total_duration": total_ns,
        "load_duration": 0,
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": ttft_ns,
        "eval_count": usage.completion_tokens,
        "eval_duration": max(0, total_ns - ttft_ns),
    }


class OllamaApi:
    """The Ollama routes, over the network's completion and embedding services."""

    def __init__(
        self, registry: Registry, completions: CompletionService, embeddings: EmbeddingService
    ) -> None:
        self.registry = registry
        self.completions = completions
        self.embeddings = embeddings

    # --- model listing --------------------------------------------------------------

    def _infos(self) -> dict[str, ModelInfo]:
        infos: dict[str, ModelInfo] = {}
        for conn in self.registry:
            for model in conn.state.manifest.models:
                infos.setdefault(model.name, model)
        return infos

    def _served_name(self, name: str) -> str:
        """Ollama clients often add ``:latest``; accept it for a model served without a tag."""
        if name.endswith(":latest") and self.registry.has_model(name[: -len(":latest")]):
            return name[: -len(":latest")]
        return name

    async def tags(self, _request: Request) -> JSONResponse:
        counts = self.registry.model_counts()
        infos = self._infos()
        now = _now()
        models = [
            {
                "name": name,
                "model": name,
                "modified_at": now,
                "size": 0,
                "digest": infos[name].sha256 if name in infos else "",
                "details": _details(infos.get(name)),
            }
            for name in sorted(counts)
        ]
        return JSONResponse({"models": models})

    async def show(self, request: Request) -> JSONResponse:
        try:
            body = await self._parse(request, ShowBody)
            name = self._served_name(body.model or body.name or "")
            if not name or name not in self.registry.model_counts():
                raise LichenError(ErrorCode.MODEL_NOT_FOUND, f"model '{name}' not found")
        except LichenError as error:
            return ollama_error(error)
        info = self._infos().get(name)
        capabilities = ["completion"]
        if any_supports(self.registry, name, "tools"):
            capabilities.append("tools")
        if any_supports(self.registry, name, "embeddings"):
            capabilities.append("embedding")
        return JSONResponse(
            {
                "modelfile": "",
                "parameters": "",
                "template": "",
                "details": _details(info),
                "model_info": {
                    "general.architecture": "",
                    "lichen.context_length": info.context if info else 0,
                    "lichen.nodes": self.registry.model_counts().get(name, 0),
                },
                "capabilities": capabilities,
                "modified_at": _now(),
            }
        )

    async def version(self, _request: Request) -> JSONResponse:
        return JSONResponse({"version": OLLAMA_API_VERSION, "lichen": __version__})

    # --- generation -----------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        outcome = Outcome(kind="chat", model="", stream=True, started=time.perf_counter())
        try:
            body = await self._parse(request, ChatBody)
            outcome.stream = body.stream
            model = self.completions.resolve_model(
                self._served_name(body.model), tools=bool(body.tools)
            )
            outcome.model = model
            wire = GenerationRequest(
                kind="chat",
                model=model,
                messages=[_wire_message(m) for m in body.messages],
                params=_params(body, body.tools),
            )
            if not wire.messages:  # Ollama answers an empty chat by loading the model
                return JSONResponse(_done_line(body.model, "chat", "load", None, outcome))
            routed = await self.completions.open(
                wire, outcome, headers=request.headers, extra=body.model_extra
            )
        except LichenError as error:
            return await self._fail(outcome, error)
        return await self._answer(request, body.model, "chat", routed, outcome, body.stream)

    async def generate(self, request: Request) -> Response:
        outcome = Outcome(kind="completion", model="", stream=True, started=time.perf_counter())
        try:
            body = await self._parse(request, GenerateBody)
            outcome.stream = body.stream
            if body.images:
                raise LichenError(
                    ErrorCode.INVALID_REQUEST, "images are not supported", param="images"
                )
            model = self.completions.resolve_model(self._served_name(body.model))
            outcome.model = model
            if not body.prompt:  # Ollama answers an empty prompt by loading the model
                return JSONResponse(_done_line(body.model, "generate", "load", None, outcome))
            if body.raw:  # the prompt is sent as is, no chat template
                wire = GenerationRequest(
                    kind="completion", model=model, prompt=body.prompt, params=_params(body)
                )
            else:  # Ollama applies the model's chat template to prompt (+ system)
                messages = [ChatMessage(role="system", content=body.system)] if body.system else []
                messages.append(ChatMessage(role="user", content=body.prompt))
                wire = GenerationRequest(
                    kind="chat", model=model, messages=messages, params=_params(body)
                )
            routed = await self.completions.open(
                wire, outcome, headers=request.headers, extra=body.model_extra
            )
        except LichenError as error:
            return await self._fail(outcome, error)
        return await self._answer(request, body.model, "generate", routed, outcome, body.stream)

    async def _answer(
        self, request: Request, name: str, api: str, routed: Routed, outcome: Outcome, stream: bool
    ) -> Response:
        headers = ({NODE_HEADER: outcome.node} if outcome.node else {}) | routed.headers
        if stream:
            return StreamingResponse(
                self._ndjson(name, api, routed, outcome), media_type=NDJSON, headers=headers
            )
        try:
            answer = await self.completions.collect(routed, request)
        except LichenError as error:
            return await self._fail(outcome, error)
        outcome.finished(answer.finish)
        await self.completions.record_outcome(outcome)
        line = _done_line(name, api, answer.finish.finish_reason, answer.finish.usage, outcome)
        _put_text(line, api, answer.text, _ollama_tool_calls(answer.tool_calls))
        return JSONResponse(line, headers=headers)

    async def _ndjson(
        self, name: str, api: str, routed: Routed, outcome: Outcome
    ) -> AsyncIterator[bytes]:
        calls: list[str] = []
        try:
            event: EngineEvent | None = routed.first
            while event is not None:
                if not isinstance(event, Delta):
                    outcome.finished(event)
                    if calls:
                        tool_line = _line(name)
                        _put_text(tool_line, api, "", _ollama_tool_calls(merge_tool_calls(calls)))
                        yield _encode(tool_line)
                    done = _done_line(name, api, event.finish_reason, event.usage, outcome)
                    yield _encode(done)
                    break
                if event.tool_calls:
                    calls.append(event.tool_calls)
                if event.text:
                    line = _line(name)
                    _put_text(line, api, event.text, [])
                    yield _encode(line)
                event = await anext(routed.events, None)
        except LichenError as error:
            outcome.status = error.http_status
            yield _encode({"error": error.message})
        finally:
            await routed.events.aclose()
            await self.completions.record_outcome(outcome)

    # --- embeddings -----------------------------------------------------------------

    async def embed(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        try:
            body = await self._parse(request, EmbedBody)
            inputs = [body.input] if isinstance(body.input, str) else list(body.input)
            answer = await self.embeddings.run(
                self._served_name(body.model), inputs, body.dimensions
            )
        except LichenError as error:
            return ollama_error(error)
        return JSONResponse(
            {
                "model": body.model,
                "embeddings": [unpack_vector(v) for v in answer.vectors],
                "total_duration": int((time.perf_counter() - started) * 1e9),
                "load_duration": 0,
                "prompt_eval_count": answer.usage.prompt_tokens,
            }
        )

    async def embeddings_legacy(self, request: Request) -> JSONResponse:
        try:
            body = await self._parse(request, LegacyEmbedBody)
            answer = await self.embeddings.run(self._served_name(body.model), [body.prompt])
        except LichenError as error:
            return ollama_error(error)
        return JSONResponse({"embedding": unpack_vector(answer.vectors[0])})

    # --- helpers --------------------------------------------------------------------

    async def _parse(self, request: Request, schema: type[Any]) -> Any:
        raw = await read_body(request, self.completions.max_request_bytes)
        try:
            return schema.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            raise from_validation(exc) from None

    async def _fail(self, outcome: Outcome, error: LichenError) -> JSONResponse:
        outcome.status = error.http_status
        if outcome.model:
            await self.completions.record_outcome(outcome)
        return ollama_error(error)


def _details(info: ModelInfo | None) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf" if info is not None and info.engine == "llamacpp" else "",
        "family": "",
        "families": None,
        "parameter_size": "",
        "quantization_level": "",
    }


def _line(name: str) -> dict[str, Any]:
    return {"model": name, "created_at": _now(), "done": False}


def _put_text(line: dict[str, Any], api: str, text: str, calls: list[dict[str, Any]]) -> None:
    if api == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        line["message"] = message
    else:
        line["response"] = text


def _done_line(
    name: str, api: str, reason: str, usage: Usage | None, outcome: Outcome
) -> dict[str, Any]:
    line = _line(name)
    _put_text(line, api, "", [])
    line["done"] = True
    line["done_reason"] = reason
    if usage is not None:
        line.update(_stats(outcome, usage))
    return line


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def register_ollama(app: FastAPI, api: OllamaApi) -> None:
    """Mount the Ollama-compatible routes on the gateway app."""
    app.add_api_route("/api/tags", api.tags, methods=["GET"])
    app.add_api_route("/api/version", api.version, methods=["GET"])
    app.add_api_route("/api/show", api.show, methods=["POST"])
    app.add_api_route("/api/chat", api.chat, methods=["POST"])
    app.add_api_route("/api/generate", api.generate, methods=["POST"])
    app.add_api_route("/api/embed", api.embed, methods=["POST"])
    app.add_api_route("/api/embeddings", api.embeddings_legacy, methods=["POST"])
