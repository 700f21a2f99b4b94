"""Routing embedding requests: one answer per request, failover between capable nodes.

Embeddings are not streamed, so there is nothing to resume: a node that fails
(or disconnects) before it answers is simply replaced by the next candidate
that advertises ``embeddings`` for the model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from lichen.errors import ErrorCode, LichenError
from lichen.routing.capabilities import any_supports, models_with, supports
from lichen.routing.router import RETRYABLE
from lichen.routing.scheduler import AUTO_MODEL, Scheduler
from lichen.wire.messages import EmbeddingRequest, EmbedResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Embedded:
    """A node's answer and who gave it."""

    result: EmbedResult
    peer_id: str


class EmbeddingRouter:
    """Finds a node that can embed with a model and asks it, failing over on node errors."""

    def __init__(self, scheduler: Scheduler, *, max_attempts: int = 4) -> None:
        self.scheduler = scheduler
        self.max_attempts = max_attempts

    def resolve_model(self, requested: str) -> str:
        """``auto``: the embedding model most nodes offer; otherwise check it can embed."""
        registry = self.scheduler.registry
        if requested == AUTO_MODEL:
            counts = models_with(registry, "embeddings")
            if not counts:
                raise LichenError(
                    ErrorCode.MODEL_NOT_FOUND,
                    "no node on this network serves an embedding model",
                    param="model",
                )
            return max(sorted(counts), key=lambda name: counts[name])
        model = self.scheduler.resolve_model(requested)  # 404 when nobody serves it
        if not any_supports(registry, model, "embeddings"):
            raise LichenError(
                ErrorCode.INVALID_REQUEST,
                f"The model `{model}` cannot produce embeddings on this network",
                param="model",
            )
        return model

    async def embed(self, request: EmbeddingRequest, *, deadline_s: float) -> Embedded:
        tried: set[str] = set()
        last_error = LichenError(ErrorCode.NO_CAPACITY, "no node can embed with this model now")
        for _attempt in range(self.max_attempts):
            conn = next(
                (
                    c
                    for c in self.scheduler.candidates(request.model, exclude=tried)
                    if supports(c, request.model, "embeddings")
                ),
                None,
            )
            if conn is None:
                break
            tried.add(conn.peer_id)
            try:
                result = await conn.embed(
                    request, deadline_ms=int((time.time() + deadline_s) * 1000)
                )
            except LichenError as error:
                if error.code not in RETRYABLE:
                    raise
                log.warning("node %s failed an embedding job; failing over", conn.peer_id)
                last_error = error
                continue
            if len(result.vectors) != len(request.inputs):
                last_error = LichenError(ErrorCode.NODE_FAILED, "a node sent the wrong vectors")
                continue
            return Embedded(result, conn.peer_id)
        raise last_error
