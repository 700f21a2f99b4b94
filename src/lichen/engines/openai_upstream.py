"""The ``openai`` engine: serve the models of any OpenAI-compatible upstream.

llama-server, Ollama, vLLM or a hosted API: the engine discovers the upstream's
models from ``GET /v1/models``, re-checks them every ``refresh_s`` seconds and
whenever a request cannot reach the upstream, and tells the node (through
``on_models_changed``) when the list changes, so that an upstream that went away
is withdrawn from the network's schedule. Requests stream over SSE with
``stream_options.include_usage``; usage passes through, and an upstream that
reports none is counted as nothing (``Usage.reported = False``), never guessed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import httpx

from lichen.engines.base import Delta, Embeddings, EngineEvent, EngineLoad, Finish, ModelsChanged
from lichen.engines.llamacpp import engine_request
from lichen.engines.openai_wire import (
    StreamState,
    decode_error_body,
    final_usage,
    parse_chunk,
    sse_data,
    upstream_error,
)
from lichen.errors import ErrorCode, LichenError
from lichen.periodic import Periodic
from lichen.tasks import cancel_and_wait
from lichen.wire.messages import EmbeddingRequest, GenerationRequest, ModelInfo, Usage
from lichen.wire.vectors import pack_vector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpstreamConfig:
    """One OpenAI-compatible upstream."""

    base_url: str  # e.g. http://127.0.0.1:11434 or https://api.example.com/v1
    api_key: str = field(default="", repr=False)  # sent as a Bearer token; never logged
    refresh_s: float = 10.0  # how often the model list is re-checked
    timeout_s: float = 300.0  # read timeout for one request
    connect_timeout_s: float = 5.0
    slots: int = 4  # parallel requests the node offers per upstream model
    context: int = 0  # context tokens per request, when known (0: unknown)
    tools: bool = True  # pass tools/tool_choice through (the upstream decides)
    embeddings: bool = False  # advertise /v1/embeddings for the upstream's models
    only: tuple[str, ...] = ()  # serve only these upstream model ids (empty: all)

    @property
    def root(self) -> str:
        """The base URL without a trailing ``/v1``: endpoints are ``{root}/v1/...``."""
        url = self.base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url


def _client(config: UpstreamConfig) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    timeout = httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s)
    return httpx.AsyncClient(base_url=config.root, headers=headers, timeout=timeout)


def _model_ids(body: Any) -> list[str]:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ValueError("no data list")
    return sorted({str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")})


class OpenAIEngine:
    """Serves an upstream's models; withdraws them while the upstream is unreachable."""

    kind = "openai"

    def __init__(self, config: UpstreamConfig, *, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._client = client or _client(config)  # closed by close(), also when given
        self._models: list[str] = []
        self._callbacks: list[ModelsChanged] = []
        self._active = 0
        self._tokens_per_s = 0.0
        self._poller: Periodic | None = None
        self._refreshing: asyncio.Task[bool] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    async def start(
        cls, config: UpstreamConfig, *, client: httpx.AsyncClient | None = None
    ) -> OpenAIEngine:
        """Discover the upstream's models now, then keep checking in the background."""
        engine = cls(config, client=client)
        await engine.refresh()
        engine._poller = Periodic(
            "upstream-models",
            engine.refresh,
            config.refresh_s,
            log=log,
            failure="could not refresh the upstream's models",
            delay_first=True,
        )
        engine._poller.start()
        return engine

    # --- models ---------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        c = self.config
        return [
            ModelInfo(
                name=name,
                sha256="",
                engine=self.kind,
                context=c.context,
                slots=c.slots,
                tools=c.tools,
                embeddings=c.embeddings,
            )
            for name in self._models
        ]

    def on_models_changed(self, callback: ModelsChanged) -> None:
        self._callbacks.append(callback)

    async def refresh(self) -> bool:
        """Re-read the upstream's model list; return whether it changed."""
        async with self._lock:
            try:
                response = await self._client.get("/v1/models")
                if response.status_code != 200:
                    raise upstream_error(response.status_code, decode_error_body(response.content))
                ids = _model_ids(response.json())
            except (httpx.HTTPError, ValueError, LichenError) as exc:
                if self._models:
                    log.warning(
                        "upstream %s is unavailable (%s); withdrawing its models",
                        self.config.root,
                        type(exc).__name__,
                    )
                ids = []
            if self.config.only:
                ids = [i for i in ids if i in self.config.only]
            if ids == self._models:
                return False
            self._models = ids
            log.info("upstream %s serves %s", self.config.root, ", ".join(ids) or "nothing")
        for callback in list(self._callbacks):
            callback()
        return True

    def _refresh_soon(self) -> None:
        """Re-check at once (a request just failed to reach the upstream)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self.refresh(), name="upstream-refresh")

    def _check_model(self, name: str) -> None:
        if name not in self._models:
            raise LichenError(
                ErrorCode.MODEL_NOT_FOUND, f"model {name!r} is not served here", param="model"
            )

    # --- load -----------------------------------------------------------------------

    def load(self) -> EngineLoad:
        slots = self.config.slots if self._models else 0
        return EngineLoad(
            free_slots=max(0, slots - self._active),
            queue_depth=max(0, self._active - slots),
            tokens_per_s=self._tokens_per_s,
        )

    def _note_speed(self, tokens: int, seconds: float) -> None:
        if tokens > 1 and seconds > 0:
            speed = tokens / seconds
            old = self._tokens_per_s
            self._tokens_per_s = speed if old == 0 else 0.8 * old + 0.2 * speed

    # --- generation -----------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[EngineEvent, None]:
        self._check_model(request.model)
        body = engine_request(request) | {"model": request.model}
        path = "/v1/chat/completions" if request.kind == "chat" else "/v1/completions"
        state = StreamState()
        self._active += 1
        first: float | None = None
        tokens = 0
        try:
            async with self._client.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    raise upstream_error(
                        response.status_code, decode_error_body(await response.aread())
                    )
                if "json" in response.headers.get("content-type", ""):
                    # An upstream that ignored ``stream``: one whole answer.
                    for event in _whole_answer(decode_error_body(await response.aread())):
                        yield event
                    return
                async for line in response.aiter_lines():
                    payload = sse_data(line)
                    if payload is None:
                        continue
                    for delta in parse_chunk(payload, state):
                        first = first or time.perf_counter()
                        tokens += delta.tokens
                        yield delta
                    if state.done:
                        break
        except httpx.HTTPError as exc:
            self._refresh_soon()
            raise LichenError(
                ErrorCode.NODE_FAILED, f"the upstream is unreachable ({type(exc).__name__})"
            ) from None
        finally:
            self._active -= 1
        if first is not None:
            self._note_speed(tokens, time.perf_counter() - first)
        yield Finish(state.finish_reason, final_usage(state))

    # --- embeddings -----------------------------------------------------------------

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        self._check_model(request.model)
        if not self.config.embeddings:
            raise LichenError(
                ErrorCode.INVALID_REQUEST,
                f"model {request.model!r} does not produce embeddings here",
                param="model",
            )
        body: dict[str, Any] = {
            "model": request.model,
            "input": request.inputs,
            "encoding_format": "float",
        }
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        self._active += 1
        try:
            response = await self._client.post("/v1/embeddings", json=body)
        except httpx.HTTPError as exc:
            self._refresh_soon()
            raise LichenError(
                ErrorCode.NODE_FAILED, f"the upstream is unreachable ({type(exc).__name__})"
            ) from None
        finally:
            self._active -= 1
        if response.status_code >= 400:
            raise upstream_error(response.status_code, decode_error_body(response.content))
        return _embeddings(decode_error_body(response.content), len(request.inputs))

    async def close(self) -> None:
        if self._poller is not None:
            await self._poller.stop()
        await cancel_and_wait(self._refreshing)
        await self._client.aclose()


def _whole_answer(body: Any) -> list[EngineEvent]:
    if not isinstance(body, dict) or not body.get("choices"):
        raise LichenError(ErrorCode.NODE_FAILED, "the upstream sent a malformed answer")
    choice = body["choices"][0]
    message = choice.get("message") or {}
    text = choice.get("text") if "text" in choice else message.get("content")
    calls = message.get("tool_calls")
    state = StreamState()
    usage = body.get("usage")
    if isinstance(usage, dict):
        state.usage = Usage(
            int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        )
    events: list[EngineEvent] = []
    if text or calls:
        events.append(Delta(text or "", tool_calls=json.dumps(calls) if calls else ""))
    events.append(Finish(str(choice.get("finish_reason") or "stop"), final_usage(state)))
    return events


def _embeddings(body: Any, count: int) -> Embeddings:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or len(data) != count:
        raise LichenError(ErrorCode.NODE_FAILED, "the upstream sent malformed embeddings")
    ordered = sorted(data, key=lambda item: int(item.get("index", 0)))
    try:
        vectors = [pack_vector([float(v) for v in item["embedding"]]) for item in ordered]
    except (KeyError, TypeError, ValueError):
        raise LichenError(ErrorCode.NODE_FAILED, "the upstream sent malformed embeddings") from None
    usage = body.get("usage")
    if isinstance(usage, dict) and "prompt_tokens" in usage:
        return Embeddings(vectors, Usage(int(usage["prompt_tokens"]), 0))
    return Embeddings(vectors, Usage(0, 0, reported=False))
