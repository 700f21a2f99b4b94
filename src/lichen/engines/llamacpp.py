"""The ``llamacpp`` engine: llama.cpp in-process through the prebuilt ``xllamacpp`` wheel.

Each model gets one ``xllamacpp.Server`` with ``parallel`` slots (continuous
batching). ``Server.handle_*`` blocks its calling thread and invokes a callback
per chunk, so each generation runs on a worker thread and hands chunks to the
event loop with ``call_soon_threadsafe``. Returning ``True`` from the callback
stops the generation, which is how ``aclose()`` cancels.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lichen.engines import generic_tools
from lichen.engines.base import Delta, Embeddings, EngineEvent, EngineLoad, Finish
from lichen.engines.grammar_guard import GrammarGuard
from lichen.errors import ErrorCode, LichenError
from lichen.wire.messages import (
    ChatMessage,
    EmbeddingRequest,
    GenerationRequest,
    ModelInfo,
    Usage,
)
from lichen.wire.vectors import pack_vector

log = logging.getLogger(__name__)

_DONE = object()


@dataclass(frozen=True)
class LlamaModelConfig:
    """One GGUF model to load."""

    name: str
    path: Path
    sha256: str
    parallel: int = 8
    ctx_size: int = 8192
    threads: int = 2
    batch_threads: int = 2
    embeddings: bool = False  # also serve /v1/embeddings (mean pooling)
    kv_unified: bool = False  # one KV cache for all slots: a request may use all of ctx_size

    @property
    def request_context(self) -> int:
        """The most tokens (prompt + answer) one request can use."""
        return self.ctx_size if self.kv_unified else self.ctx_size // self.parallel


class _Loaded:
    def __init__(
        self, config: LlamaModelConfig, server: Any, *, tools: bool = False, context: int = 0
    ) -> None:
        self.config = config
        self.server = server
        self.tools = tools
        # llama.cpp's real per-request context (0: unknown, use the configured one)
        self.context = context or config.request_context
        self.active = 0


def _props(server: Any, api_key: str) -> dict[str, Any]:
    """llama.cpp's ``/props`` (``{}`` if it cannot be read)."""
    try:
        response = httpx.get(
            f"{server.listening_address}/props",
            headers={"authorization": f"Bearer {api_key}"},
            timeout=5.0,
            trust_env=False,
        )
        props = response.json()
    except (httpx.HTTPError, ValueError, AttributeError):
        return {}
    return props if isinstance(props, dict) else {}


def _supports_tools(props: dict[str, Any]) -> bool:
    """Whether the model's chat template renders tools."""
    caps = props.get("chat_template_caps") or {}
    return isinstance(caps, dict) and bool(
        caps.get("supports_tools") and caps.get("supports_tool_calls")
    )


def _slot_context(props: dict[str, Any]) -> int:
    """One slot's context as llama.cpp set it: the configured per-request context capped
    at the model's training context (SmolLM2: 8192), which the manifest must not exceed."""
    settings = props.get("default_generation_settings") or {}
    n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
    return n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else 0


def _start_model(config: LlamaModelConfig) -> _Loaded:
    api_key = secrets.token_hex(32)
    server = _load_server(config, api_key)
    props = _props(server, api_key)
    return _Loaded(config, server, tools=_supports_tools(props), context=_slot_context(props))


def _load_server(config: LlamaModelConfig, api_key: str) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(config.path)
    params.n_parallel = config.parallel
    params.n_ctx = config.ctx_size
    params.kv_unified = config.kv_unified
    params.cpuparams.n_threads = config.threads
    params.cpuparams_batch.n_threads = config.batch_threads
    params.warmup = False
    params.verbosity = -1  # llama.cpp's own log could echo request details
    # The wheel also opens an HTTP listener on loopback; lock it with a random key
    # nobody knows so that only this process can use the engine.
    params.api_keys = [api_key]
    if config.embeddings:
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    return xllamacpp.Server(params)


def engine_request(request: GenerationRequest) -> dict[str, Any]:
    """Translate a wire request into llama.cpp's OpenAI-style JSON."""
    p = request.params
    body: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    if request.kind == "chat":
        messages: list[dict[str, Any]] = [_message(m) for m in request.messages]
        if request.continuation:
            # llama.cpp continues a trailing assistant message (prefill).
            messages.append({"role": "assistant", "content": request.continuation})
        body["messages"] = messages
    else:
        body["prompt"] = request.prompt + request.continuation
    for key in ("max_tokens", "temperature", "top_p", "seed", "presence_penalty"):
        value = getattr(p, key)
        if value is not None:
            body[key] = value
    if p.frequency_penalty is not None:
        body["frequency_penalty"] = p.frequency_penalty
    if p.stop:
        body["stop"] = list(p.stop)
    if p.response_format:
        body["response_format"] = json.loads(p.response_format)
    if p.tools:
        body["tools"] = json.loads(p.tools)
    if p.tool_choice:
        body["tool_choice"] = json.loads(p.tool_choice)
    if p.logprobs is not None:  # llama.cpp reports token probabilities (OpenAI's shape)
        body["logprobs"] = True
        body["top_logprobs"] = p.logprobs
        body["n_probs"] = p.logprobs
    return body


def _message(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = json.loads(m.tool_calls)
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def _engine_error(payload: dict[str, Any]) -> LichenError:
    err = payload.get("error") or {}
    message = str(err.get("message") or "engine error")
    if err.get("type") == "exceed_context_size_error":
        return LichenError(ErrorCode.CONTEXT_LENGTH_EXCEEDED, message, param="messages")
    if err.get("code") == 400 or err.get("type") == "invalid_request_error":
        return LichenError(ErrorCode.INVALID_REQUEST, message)
    return LichenError(ErrorCode.ENGINE_ERROR, message)


class LlamaCppEngine:
    """Serves GGUF models with llama.cpp, several generations at once."""

    kind = "llamacpp"

    def __init__(
        self,
        loaded: dict[str, _Loaded],
        *,
        max_workers: int = 64,
        stall_s: float = 60.0,
        guard: GrammarGuard | None = None,
        close_timeout_s: float = 10.0,
    ) -> None:
        self._models = loaded
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="llamacpp")
        self._tokens_per_s = 0.0
        self.stall_s = stall_s  # work but no chunk for this long: the loop is stuck
        self.guard = guard  # refuses grammar work that would stall the loop (None: off)
        self.close_timeout_s = close_timeout_s
        self._last_progress = time.monotonic()  # last chunk, or when work arrived on idle
        self._was_stalled = False

    @classmethod
    async def start(
        cls,
        configs: list[LlamaModelConfig],
        *,
        stall_s: float = 60.0,
        guard: GrammarGuard | None = None,
    ) -> LlamaCppEngine:
        loaded: dict[str, _Loaded] = {}
        for config in configs:
            started = time.perf_counter()
            loaded[config.name] = await asyncio.to_thread(_start_model, config)
            log.info(
                "loaded model %s (%d slots, ctx %d, threads %d/%d) in %.2fs",
                config.name,
                config.parallel,
                config.ctx_size,
                config.threads,
                config.batch_threads,
                time.perf_counter() - started,
            )
        return cls(loaded, stall_s=stall_s, guard=guard)

    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                name=name,
                sha256=m.config.sha256,
                engine=self.kind,
                context=m.context,
                slots=m.config.parallel,
                tools=True,  # native template, else generic (lichen.engines.generic_tools)
                tool_format="native" if m.tools else "generic",
                embeddings=m.config.embeddings,
            )
            for name, m in self._models.items()
        ]

    def load(self) -> EngineLoad:
        free = sum(max(0, m.config.parallel - m.active) for m in self._models.values())
        queued = sum(max(0, m.active - m.config.parallel) for m in self._models.values())
        return EngineLoad(
            free_slots=free,
            queue_depth=queued,
            tokens_per_s=self._tokens_per_s,
            stalled=self.stalled(),
        )

    def stalled(self) -> bool:
        """Whether work is waiting and llama.cpp produced nothing for ``stall_s``."""
        busy = any(m.active for m in self._models.values())
        stuck = busy and time.monotonic() - self._last_progress > self.stall_s
        if stuck != self._was_stalled:
            self._was_stalled = stuck
            if stuck:
                log.warning(
                    "engine stalled: no progress for %.0fs with work waiting; "
                    "reporting unhealthy until it moves",
                    self.stall_s,
                )
            else:
                log.info("engine progressing again")
        return stuck

    def _note_progress(self) -> None:
        self._last_progress = time.monotonic()

    def _model(self, name: str) -> _Loaded:
        model = self._models.get(name)
        if model is None:
            raise LichenError(ErrorCode.MODEL_NOT_FOUND, f"model {name!r} is not served here")
        return model

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[EngineEvent, None]:
        model = self._model(request.model)
        if self.guard is not None:
            await self.guard.check(request)  # before the engine loop sees any grammar
        body = engine_request(request)
        generic = bool(request.params.tools) and not model.tools
        if generic:
            generic_tools.apply(body)
        # generic tools: a text answer streams as decoded; a call is parsed once complete
        answer_stream = generic_tools.AnswerStream() if generic else None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def on_chunk(chunk: Any) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return stop.is_set()

        def run() -> None:
            handler = (
                model.server.handle_chat_completions
                if request.kind == "chat"
                else model.server.handle_completions
            )
            try:
                handler(body, on_chunk)
            except ValueError as exc:  # llama.cpp's request validation
                loop.call_soon_threadsafe(
                    queue.put_nowait, LichenError(ErrorCode.INVALID_REQUEST, str(exc))
                )
            except Exception as exc:
                loop.call_soon_threadsafe(
                    queue.put_nowait, LichenError(ErrorCode.ENGINE_ERROR, type(exc).__name__)
                )
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        if not any(m.active for m in self._models.values()):
            self._note_progress()  # idle until now: the stall clock starts here
        model.active += 1
        future = loop.run_in_executor(self._pool, run)
        finish_reason = "stop"
        usage: Usage | None = None
        try:
            while True:
                item = await queue.get()
                self._note_progress()
                if item is _DONE:
                    break
                if isinstance(item, LichenError):
                    raise item
                if "error" in item:
                    raise _engine_error(item)
                if item.get("usage"):
                    u = item["usage"]
                    details = u.get("prompt_tokens_details") or {}
                    usage = Usage(
                        int(u["prompt_tokens"]),
                        int(u["completion_tokens"]),
                        cached_tokens=int(details.get("cached_tokens") or 0),
                    )
                    self._note_speed(item.get("timings"))
                for choice in item.get("choices") or ():
                    delta = choice.get("delta") or {}
                    text = choice.get("text")
                    if text is None:
                        text = delta.get("content")
                    calls = delta.get("tool_calls")
                    reported = choice.get("logprobs")
                    probs = reported.get("content") if isinstance(reported, dict) else None
                    logprobs = json.dumps(probs) if isinstance(probs, list) and probs else ""
                    if answer_stream is not None and text:
                        text = answer_stream.feed(text)
                    if text or calls or logprobs:
                        yield Delta(
                            text or "",
                            tool_calls=json.dumps(calls) if calls else "",
                            logprobs=logprobs,
                        )
                    if choice.get("finish_reason"):
                        finish_reason = str(choice["finish_reason"])
            if answer_stream is not None:
                answer, tool_calls = answer_stream.finish()
                if tool_calls:
                    finish_reason = "tool_calls"
                if answer or tool_calls:
                    yield Delta(answer, tool_calls=json.dumps(tool_calls) if tool_calls else "")
            yield Finish(finish_reason, usage or Usage(0, 0))
        finally:
            stop.set()
            model.active -= 1
            if not future.done():
                # Drain without blocking the caller; the worker exits at the next token.
                future.add_done_callback(lambda _f: None)

    def _note_speed(self, timings: Any) -> None:
        if isinstance(timings, dict):
            speed = float(timings.get("predicted_per_second") or 0.0)
            if speed > 0:
                self._tokens_per_s = (
                    speed if self._tokens_per_s == 0 else 0.8 * self._tokens_per_s + 0.2 * speed
                )

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        model = self._model(request.model)
        if not model.config.embeddings:
            raise LichenError(
                ErrorCode.INVALID_REQUEST,
                f"model {request.model!r} is not loaded for embeddings",
                param="model",
            )
        body: dict[str, Any] = {"input": list(request.inputs), "encoding_format": "float"}
        loop = asyncio.get_running_loop()
        model.active += 1
        try:
            result = await loop.run_in_executor(self._pool, model.server.handle_embeddings, body)
        except ValueError as exc:
            raise LichenError(ErrorCode.INVALID_REQUEST, str(exc), param="input") from None
        finally:
            model.active -= 1
        if isinstance(result, str):
            result = json.loads(result)
        if "error" in result:
            raise _engine_error(result)
        data = sorted(result.get("data") or [], key=lambda item: int(item.get("index", 0)))
        if len(data) != len(request.inputs):
            raise LichenError(ErrorCode.ENGINE_ERROR, "llama.cpp returned the wrong vector count")
        vectors = []
        for item in data:
            values = item["embedding"]
            if request.dimensions is not None:
                values = values[: request.dimensions]
            vectors.append(pack_vector(values))
        usage = result.get("usage") or {}
        return Embeddings(vectors, Usage(int(usage.get("prompt_tokens") or 0), 0))

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        servers = [m.server for m in self._models.values()]
        self._models.clear()
        # Dropping the last reference stops llama.cpp's loop; do it off the event loop.
        # A loop stuck in one long call (a huge grammar) does not stop: do not wait for
        # ever; the process's shutdown deadline (``shutdown_grace_s``) ends it.
        stopping = asyncio.ensure_future(asyncio.to_thread(servers.clear))
        try:
            async with asyncio.timeout(self.close_timeout_s):
                await asyncio.shield(stopping)
        except TimeoutError:
            log.warning(
                "llama.cpp did not stop within %.0fs (stuck engine loop)", self.close_timeout_s
            )
