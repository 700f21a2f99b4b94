"""Routing embedding requests: one answer per request, failover between capable nodes.

Embeddings are not streamed, so there is nothing to resume: a node that fails
(or disconnects) before it answers is simply replaced by the next candidate
that advertises ``embeddings`` for the model. A node's answer is checked before
anyone sees it: the wrong number of vectors, a length that is not whole float32
values or not the requested dimension, NaN or infinity, or a usage its inputs
cannot hold is that node's failure (counted against it), and the next node tries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from lichen.errors import ErrorCode, LichenError
from lichen.routing.capabilities import any_supports, models_with, supports
from lichen.routing.router import DEFAULT_FIRST_TOKEN_TIMEOUT_S, RETRYABLE
from lichen.routing.scheduler import AUTO_MODEL, Scheduler
from lichen.tracker.output import vectors_problem
from lichen.wire.messages import EmbeddingRequest, EmbedResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Embedded:
    """A node's answer and who gave it."""

    result: EmbedResult
    peer_id: str


class EmbeddingRouter:
    """Finds a node that can embed with a model and asks it, failing over on node errors."""

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        max_attempts: int = 4,
        answer_timeout_s: float | None = DEFAULT_FIRST_TOKEN_TIMEOUT_S,
    ) -> None:
        self.scheduler = scheduler
        self.max_attempts = max_attempts
        self.answer_timeout_s = answer_timeout_s  # a node silent this long has failed

    def resolve_model(self, requested: str) -> str:
        """``auto``: the embedding model most nodes offer; otherwise check it can embed."""
        registry = self.scheduler.registry
        if requested == AUTO_MODEL:
            counts = models_with(registry, "embeddings")
            if not counts:
                raise LichenError(
                    ErrorCode.MODEL_NOT_FOUND,
                    "no node on this network serves an embedding model; start a node "
                    "with `--embeddings` (`lichen up --embeddings`, `lichen node --embeddings`)",
                    param="model",
                )
            return max(sorted(counts), key=lambda name: counts[name])
        model = self.scheduler.resolve_model(requested)  # 404 when nobody serves it
        if not any_supports(registry, model, "embeddings"):
            raise LichenError(
                ErrorCode.INVALID_REQUEST,
                f"The model `{model}` cannot produce embeddings on this network; its nodes "
                "load it for embeddings when started with `--embeddings` (`lichen up "
                "--embeddings`, `lichen node --embeddings`)",
                param="model",
            )
        return model

    async def embed(
        self, request: EmbeddingRequest, *, deadline_s: float, privacy_class: str = ""
    ) -> Embedded:
        """``privacy_class``: only nodes whose trust the policy allows for it (as completions)."""
        tried: set[str] = set()
        last_error = LichenError(ErrorCode.NO_CAPACITY, "no node can embed with this model now")
        for _attempt in range(self.max_attempts):
            conn = next(
                (
                    c
                    for c in self.scheduler.candidates(
                        request.model, exclude=tried, privacy_class=privacy_class
                    )
                    if supports(c, request.model, "embeddings")
                ),
                None,
            )
            if conn is None:
                break
            tried.add(conn.peer_id)
            try:
                async with asyncio.timeout(self.answer_timeout_s):
                    result = await conn.embed(
                        request, deadline_ms=int((time.time() + deadline_s) * 1000)
                    )
            except TimeoutError:
                log.warning("node %s did not answer an embedding job; failing over", conn.peer_id)
                conn.state.failures += 1
                self.scheduler.reputation.job_failed(conn.peer_id)
                last_error = LichenError(ErrorCode.NODE_FAILED, "the serving node did not answer")
                continue
            except LichenError as error:
                if error.code not in RETRYABLE:
                    raise
                if error.code is ErrorCode.NODE_FAILED:
                    self.scheduler.reputation.job_failed(conn.peer_id)
                log.warning("node %s failed an embedding job; failing over", conn.peer_id)
                last_error = error
                continue
            problem = vectors_problem(result, request)
            if problem is not None:
                log.warning("node %s sent bad embeddings: %s", conn.peer_id, problem)
                conn.state.failures += 1
                self.scheduler.reputation.job_failed(conn.peer_id)
                last_error = LichenError(
                    ErrorCode.NODE_FAILED, f"the serving node sent bad embeddings ({problem})"
                )
                continue
            return Embedded(result, conn.peer_id)
        raise last_error
