"""An Ollama-compatible API, so Ollama clients and tools work against a Lichen gateway.

``GET /api/tags``, ``POST /api/chat``, ``POST /api/generate`` (NDJSON streams by
default, one object with ``"stream": false``), ``POST /api/show``, ``POST
/api/embed`` (and the older ``/api/embeddings``) and ``GET /api/version``.
Requests are translated into the same wire request the OpenAI routes build and
take the same answer path (:func:`lichen.gateway.answer.answer`: validation,
privacy pipeline, routing, failover, resume, deadline, settlement); only the
shapes differ. Errors are Ollama's ``{"error": "..."}`` with the HTTP status, and
an error after the stream has started is a final ``{"error": ...}`` line, as
Ollama does.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from lichen import __version__
from lichen.engines.base import Delta, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.answer import Call, answer
from lichen.gateway.completions import Answer, CompletionService
from lichen.gateway.dialects.ollama_schema import (
    ChatBody,
    EmbedBody,
    GenerateBody,
    LegacyEmbedBody,
    OllamaMessage,
    Options,
    ShowBody,
)
from lichen.gateway.dialects.route import DialectRoute, dialect_router
from lichen.gateway.embeddings import EmbeddingService
from lichen.gateway.responses import merge_tool_calls
from lichen.routing.capabilities import any_supports
from lichen.tracker.registry import Registry
from lichen.wire.messages import ChatMessage, GenerationRequest, ModelInfo, SamplingParams, Usage
from lichen.wire.vectors import unpack_vector

OLLAMA_API_VERSION = "0.6.0"  # the Ollama API generation these routes follow
NDJSON = "application/x-ndjson"


def ollama_error(error: LichenError) -> JSONResponse:
    return JSONResponse(
        {"error": error.message}, status_code=error.http_status, headers=error.headers or None
    )


class OllamaRoute(DialectRoute):
    """Errors as ``{"error": "..."}``; an empty body means ``{}``."""

    empty_body = b"{}"
    param_names = {"max_tokens": "num_predict", "response_format": "format"}

    @staticmethod
    def render_error(error: LichenError) -> Response:
        return ollama_error(error)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _params(
    format_: str | dict[str, Any] | None,
    options: Options | None,
    tools: list[dict[str, Any]] | None = None,
) -> SamplingParams:
    o = options or Options()
    stop = [o.stop] if isinstance(o.stop, str) else list(o.stop or [])
    fmt: dict[str, Any] | None = None
    if format_ == "json":
        fmt = {"type": "json_object"}
    elif isinstance(format_, dict):
        fmt = {"type": "json_schema", "json_schema": {"name": "format", "schema": format_}}
    elif format_ not in (None, ""):
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


class OllamaRenderer:
    """NDJSON lines (``/api/chat`` messages or ``/api/generate`` responses)."""

    media_type = NDJSON

    def __init__(self, name: str, api: str, started: float) -> None:
        self.name = name
        self.api = api
        self.started = started
        self.first_at: float | None = None
        self.calls: list[str] = []

    def start(self) -> list[bytes]:
        return []

    def delta(self, index: int, delta: Delta) -> list[bytes]:
        if self.first_at is None:
            self.first_at = time.perf_counter()
        if delta.tool_calls:
            self.calls.append(delta.tool_calls)
        if not delta.text:
            return []
        line = _line(self.name)
        _put_text(line, self.api, delta.text, [])
        return [_encode(line)]

    def finish(self, index: int, finish: Finish) -> list[bytes]:
        lines = []
        if self.calls:
            tool_line = _line(self.name)
            calls = _ollama_tool_calls(merge_tool_calls(self.calls))
            _put_text(tool_line, self.api, "", calls)
            lines.append(_encode(tool_line))
        lines.append(_encode(self.done(finish.finish_reason, finish.usage)))
        return lines

    def end(self, usage: Usage) -> list[bytes]:
        return []

    def error(self, error: LichenError) -> list[bytes]:
        return [_encode({"error": error.message})]

    def full(self, answers: list[Answer], usage: Usage) -> dict[str, Any]:
        (whole,) = answers
        line = self.done(whole.finish.finish_reason, usage)
        _put_text(line, self.api, whole.text, _ollama_tool_calls(whole.tool_calls))
        return line

    def done(self, reason: str, usage: Usage | None) -> dict[str, Any]:
        line = _line(self.name)
        _put_text(line, self.api, "", [])
        line["done"] = True
        line["done_reason"] = reason
        if usage is not None:
            now = time.perf_counter()
            total_ns = int((now - self.started) * 1e9)
            ttft_ns = int(((self.first_at or now) - self.started) * 1e9)
            line |= {
                "total_duration": total_ns,
                "load_duration": 0,
                "prompt_eval_count": usage.prompt_tokens,
                "prompt_eval_duration": ttft_ns,
                "eval_count": usage.completion_tokens,
                "eval_duration": max(0, total_ns - ttft_ns),
            }
        return line


class OllamaApi:
    """The Ollama routes, over the network's completion and embedding services."""

    def __init__(
        self, registry: Registry, completions: CompletionService, embeddings: EmbeddingService
    ) -> None:
        self.registry = registry
        self.completions = completions
        self.embeddings = embeddings

    def _infos(self) -> dict[str, ModelInfo]:
        infos: dict[str, ModelInfo] = {}
        for conn in self.registry:
            for model in conn.state.manifest.models:
                infos.setdefault(model.name, model)
        return infos

    def served_name(self, name: str) -> str:
        """Ollama clients often add ``:latest``; accept it for a model served without a tag."""
        if name.endswith(":latest") and self.registry.has_model(name[: -len(":latest")]):
            return name[: -len(":latest")]
        return name

    async def tags(self) -> JSONResponse:
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

    async def show(self, body: ShowBody) -> JSONResponse:
        name = self.served_name(body.model or body.name or "")
        if not name or name not in self.registry.model_counts():
            raise LichenError(ErrorCode.MODEL_NOT_FOUND, f"model '{name}' not found")
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

    async def version(self) -> JSONResponse:
        return JSONResponse({"version": OLLAMA_API_VERSION, "lichen": __version__})

    async def chat(self, body: ChatBody, request: Request) -> Response:
        started = time.perf_counter()
        model = self.completions.resolve_model(self.served_name(body.model), tools=bool(body.tools))
        renderer = OllamaRenderer(body.model, "chat", started)
        if not body.messages:  # Ollama answers an empty chat by loading the model
            return JSONResponse(renderer.done("load", None))
        wire = GenerationRequest(
            kind="chat",
            model=model,
            messages=[_wire_message(m) for m in body.messages],
            params=_params(body.format, body.options, body.tools),
        )
        call = Call(
            wire=wire,
            kind="chat",
            stream=body.stream,
            headers=request.headers,
            extra=body.model_extra or {},
            started=started,
        )
        return await answer(self.completions, call, renderer, request)

    async def generate(self, body: GenerateBody, request: Request) -> Response:
        started = time.perf_counter()
        if body.images:
            raise LichenError(ErrorCode.INVALID_REQUEST, "images are not supported", param="images")
        model = self.completions.resolve_model(self.served_name(body.model))
        renderer = OllamaRenderer(body.model, "generate", started)
        if not body.prompt:  # Ollama answers an empty prompt by loading the model
            return JSONResponse(renderer.done("load", None))
        params = _params(body.format, body.options)
        if body.raw:  # the prompt is sent as is, no chat template
            wire = GenerationRequest(
                kind="completion", model=model, prompt=body.prompt, params=params
            )
        else:  # Ollama applies the model's chat template to prompt (+ system)
            messages = [ChatMessage(role="system", content=body.system)] if body.system else []
            messages.append(ChatMessage(role="user", content=body.prompt))
            wire = GenerationRequest(kind="chat", model=model, messages=messages, params=params)
        call = Call(
            wire=wire,
            kind="completion",
            stream=body.stream,
            headers=request.headers,
            extra=body.model_extra or {},
            started=started,
        )
        return await answer(self.completions, call, renderer, request)

    async def embed(self, body: EmbedBody, request: Request) -> JSONResponse:
        started = time.perf_counter()
        inputs = [body.input] if isinstance(body.input, str) else list(body.input)
        result = await self.embeddings.run(
            self.served_name(body.model),
            inputs,
            body.dimensions,
            headers=request.headers,
            extra=body.model_extra or {},
        )
        return JSONResponse(
            {
                "model": body.model,
                "embeddings": [unpack_vector(v) for v in result.vectors],
                "total_duration": int((time.perf_counter() - started) * 1e9),
                "load_duration": 0,
                "prompt_eval_count": result.usage.prompt_tokens,
            }
        )

    async def embeddings_legacy(self, body: LegacyEmbedBody, request: Request) -> JSONResponse:
        result = await self.embeddings.run(
            self.served_name(body.model),
            [body.prompt],
            headers=request.headers,
            extra=body.model_extra or {},
        )
        return JSONResponse({"embedding": unpack_vector(result.vectors[0])})


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


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def ollama_routers(api: OllamaApi) -> list[APIRouter]:
    """The Ollama routes: listing routes open, generation and embeddings guarded."""
    listing = dialect_router(OllamaRoute, guard=False, tags=["Ollama"])
    listing.add_api_route("/api/tags", api.tags, methods=["GET"], response_model=None)
    listing.add_api_route("/api/version", api.version, methods=["GET"], response_model=None)
    listing.add_api_route("/api/show", api.show, methods=["POST"], response_model=None)
    guarded = dialect_router(OllamaRoute, tags=["Ollama"])
    guarded.add_api_route("/api/chat", api.chat, methods=["POST"], response_model=None)
    guarded.add_api_route("/api/generate", api.generate, methods=["POST"], response_model=None)
    guarded.add_api_route("/api/embed", api.embed, methods=["POST"], response_model=None)
    guarded.add_api_route(
        "/api/embeddings", api.embeddings_legacy, methods=["POST"], response_model=None
    )
    return [listing, guarded]


def register_ollama(app: FastAPI, api: OllamaApi) -> None:
    """Mount the Ollama-compatible routes on the gateway app."""
    for router in ollama_routers(api):
        app.include_router(router)
