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
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import Response

from lichen.errors import ErrorCode, LichenError
from lichen.gateway.completions import NODE_HEADER, read_body
from lichen.gateway.errors import error_response, from_validation
from lichen.routing.embed import EmbeddingRouter
from lichen.wire.messages import EmbeddingRequest, Usage
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
    """Validates embedding requests and routes them over the network."""

    def __init__(
        self, *, router: EmbeddingRouter, max_request_bytes: int, timeout_s: float
    ) -> None:
        self.router = router
        self.max_request_bytes = max_request_bytes
        self.timeout_s = timeout_s

    async def run(
        self, requested: str, inputs: list[str], dimensions: int | None = None
    ) -> EmbeddingAnswer:
        """Embed ``inputs`` with ``requested`` (or ``auto``): the path every API dialect shares."""
        model = self.router.resolve_model(requested)
        request = EmbeddingRequest(model=model, inputs=inputs, dimensions=dimensions)
        try:
            async with asyncio.timeout(self.timeout_s):
                done = await self.router.embed(request, deadline_s=self.timeout_s)
        except TimeoutError:
            raise LichenError(ErrorCode.TIMEOUT, "request timed out") from None
        return EmbeddingAnswer(model, done.result.vectors, done.result.usage, done.peer_id)

    async def embeddings(self, request: Request) -> Response:
        try:
            raw = await read_body(request, self.max_request_bytes)
            try:
                body = EmbeddingsBody.model_validate_json(raw)
            except ValidationError as exc:
                raise from_validation(exc) from None
            answer = await self.run(body.model, body.inputs, body.dimensions)
        except LichenError as error:
            return error_response(error)
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
