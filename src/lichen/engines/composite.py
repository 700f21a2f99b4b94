"""Several engines behind one: a node's jobs are routed by model name.

The node agent takes exactly one :class:`~lichen.engines.base.Engine`; a node that
serves a local GGUF *and* an upstream's models hands it a ``CompositeEngine``.
The first engine that lists a model serves it; model-list changes of any part
are passed on to whoever watches the composite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence

from lichen.engines.base import (
    Embedder,
    Embeddings,
    Engine,
    EngineEvent,
    EngineLoad,
    ModelsChanged,
    WatchesModels,
)
from lichen.errors import ErrorCode, LichenError
from lichen.wire.messages import EmbeddingRequest, GenerationRequest, ModelInfo

log = logging.getLogger(__name__)


class CompositeEngine:
    """Routes each request to the engine that serves its model."""

    kind = "composite"

    def __init__(self, engines: Sequence[Engine]) -> None:
        if not engines:
            raise ValueError("a composite engine needs at least one engine")
        self.engines = list(engines)
        self._callbacks: list[ModelsChanged] = []
        for engine in self.engines:
            if isinstance(engine, WatchesModels):
                engine.on_models_changed(self._changed)

    def _changed(self) -> None:
        for callback in list(self._callbacks):
            callback()

    def on_models_changed(self, callback: ModelsChanged) -> None:
        self._callbacks.append(callback)

    def models(self) -> list[ModelInfo]:
        seen: set[str] = set()
        out: list[ModelInfo] = []
        for engine in self.engines:
            for model in engine.models():
                if model.name not in seen:
                    seen.add(model.name)
                    out.append(model)
        return out

    def engine_for(self, model: str) -> Engine:
        for engine in self.engines:
            if any(m.name == model for m in engine.models()):
                return engine
        raise LichenError(
            ErrorCode.MODEL_NOT_FOUND, f"model {model!r} is not served here", param="model"
        )

    def load(self) -> EngineLoad:
        loads = [engine.load() for engine in self.engines]
        busy = [load.tokens_per_s for load in loads if load.tokens_per_s > 0]
        return EngineLoad(
            free_slots=sum(load.free_slots for load in loads),
            queue_depth=sum(load.queue_depth for load in loads),
            tokens_per_s=min(busy) if busy else 0.0,
            stalled=any(load.stalled for load in loads),
        )

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[EngineEvent, None]:
        events = self.engine_for(request.model).generate(request)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        engine = self.engine_for(request.model)
        if not isinstance(engine, Embedder):
            raise LichenError(
                ErrorCode.INVALID_REQUEST,
                f"model {request.model!r} does not produce embeddings",
                param="model",
            )
        return await engine.embed(request)

    async def close(self) -> None:
        results = await asyncio.gather(
            *(engine.close() for engine in self.engines), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.warning("an engine failed to close: %s", type(result).__name__)
