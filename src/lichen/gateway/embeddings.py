"""``POST /v1/embeddings``: routed to nodes whose models advertise ``embeddings``.

Vectors travel the wire as packed float32 (the same bytes OpenAI's
``encoding_format: base64`` carries), so ``base64`` answers need no conversion
and ``float`` answers unpack them. A model nobody serves is a 404; a model that
is served but cannot embed is a 400 naming ``model``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from lichen.errors import ErrorCode, LichenError
from lichen.gateway.completions import NODE_HEADER, CompletionService, Outcome
from lichen.gateway.dialects.openai import OpenAIRoute
from lichen.gateway.dialects.route import dialect_router
from lichen.routing.embed import EmbeddingRouter
from lichen.wire.messages import ChatMessage, EmbeddingRequest, GenerationRequest, Usage
from lichen.wire.vectors import unpack_vector

log = logging.getLogger(__name__)

MAX_INPUTS = 256


class EmbeddingsBody(BaseModel):
    """OpenAI's embeddings request (token-array inputs are not supported)."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: str | Annotated[list[str], Field(min_length=1, max_length=MAX_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if any(not text for text in texts):
            raise ValueError("inputs must be non-empty strings")
        return value

    @property
    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


@dataclass(frozen=True)
class EmbeddingAnswer:
    model: str  # the model that embedded (``auto`` resolved)
    vectors: list[bytes]  # packed float32, in input order
    usage: Usage
    node: str


class EmbeddingService:
    """Validates embedding requests and routes them over the network.

    With ``answers`` (the completion service), embeddings take the same privacy
    pipeline (privacy class, input screening, pseudonymization) and are recorded
    and settled (quota tokens, account usage, request log, and the node's signed
    receipt in the ledger: the caller is charged for the input tokens) like completions.
    """

    def __init__(
        self,
        *,
        router: EmbeddingRouter,
        max_request_bytes: int,
        timeout_s: float,
        answers: CompletionService | None = None,
    ) -> None:
        self.router = router
        self.max_request_bytes = max_request_bytes
        self.timeout_s = timeout_s
        self.answers = answers

    async def run(
        self,
        requested: str,
        inputs: list[str],
        dimensions: int | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        user: str | None = None,
    ) -> EmbeddingAnswer:
        """Embed ``inputs`` with ``requested`` (or ``auto``): the path every API dialect shares."""
        model = self.router.resolve_model(requested)
        pipeline = self.answers.pipeline if self.answers is not None else None
        privacy_class = ""
        if pipeline is not None:
            probe = GenerationRequest(
                kind="chat",
                model=model,
                messages=[ChatMessage(role="user", content=text) for text in inputs],
            )
            run = await pipeline.begin(probe, headers=headers or {}, extra=extra or {}, user=user)
            inputs = [m.content for m in run.request.messages]
            privacy_class = run.request.privacy_class
        outcome = Outcome(kind="embedding", model=model, stream=False, started=time.perf_counter())
        request = EmbeddingRequest(model=model, inputs=inputs, dimensions=dimensions)
        try:
            async with asyncio.timeout(self.timeout_s):
                done = await self.router.embed(
                    request, deadline_s=self.timeout_s, privacy_class=privacy_class
                )
        except TimeoutError:
            await self._settle(outcome, ErrorCode.TIMEOUT.http_status)
            raise LichenError(ErrorCode.TIMEOUT, "request timed out") from None
        except LichenError as error:
            await self._settle(outcome, error.http_status)
            raise
        outcome.node = done.peer_id
        outcome.usage = done.result.usage  # checked against the inputs by the router
        outcome.receipt, outcome.job_id = done.result.receipt, done.result.job_id
        outcome.ttft_ms = int((time.perf_counter() - outcome.started) * 1000)
        await self._settle(outcome, 200)
        return EmbeddingAnswer(model, done.result.vectors, done.result.usage, done.peer_id)

    async def _settle(self, outcome: Outcome, status: int) -> None:
        if self.answers is not None:
            outcome.status = status
            await self.answers.record_outcome(outcome)


def embeddings_router(service: EmbeddingService) -> APIRouter:
    """``POST /v1/embeddings`` (guarded, OpenAI-shaped errors)."""
    router = dialect_router(OpenAIRoute, tags=["OpenAI"])

    @router.post("/v1/embeddings", response_model=None, summary="Embeddings")
    async def embeddings(body: EmbeddingsBody, request: Request) -> Response:
        answer = await service.run(
            body.model,
            body.inputs,
            body.dimensions,
            headers=request.headers,
            extra=body.model_extra or {},
            user=body.user,
        )
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": (
                    base64.b64encode(vector).decode("ascii")
                    if body.encoding_format == "base64"
                    else unpack_vector(vector)
                ),
            }
            for i, vector in enumerate(answer.vectors)
        ]
        tokens = answer.usage.prompt_tokens
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.model if body.model != "auto" else answer.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            headers={NODE_HEADER: answer.node},
        )

    return router
