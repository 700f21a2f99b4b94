"""What OpenAI's chat and completions dialects share: errors, renderer, routes."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from lichen.engines.base import Delta, Finish
from lichen.errors import LichenError
from lichen.gateway.completions import Answer, parse_logprobs
from lichen.gateway.dialects.route import DialectRoute
from lichen.gateway.responses import SSE_DONE, ResponseShape, sse, usage_body
from lichen.http.errors import error_response
from lichen.wire.messages import Usage


class OpenAIRoute(DialectRoute):
    """Errors as ``{"error": {"message", "type", "param", "code"}}``."""

    @staticmethod
    def render_error(error: LichenError) -> Response:
        return error_response(error)


def delta_logprobs(delta: Delta) -> list[dict[str, Any]] | None:
    """The OpenAI ``logprobs.content`` entries a node reported for ``delta``."""
    return parse_logprobs(delta.logprobs)


class OpenAIRenderer:
    """Chat (``chat.completion.chunk``) or legacy completion (``text_completion``) shapes."""

    media_type = "text/event-stream"

    def __init__(
        self, shape: ResponseShape, *, n: int, include_usage: bool, logprobs: bool
    ) -> None:
        self.shape = shape
        self.n = n
        self.include_usage = include_usage
        self.logprobs = logprobs

    def start(self) -> list[bytes]:
        opening = [self.shape.first_chunk(i) for i in range(self.n)]
        return [chunk for chunk in opening if chunk is not None]

    def delta(self, index: int, delta: Delta) -> list[bytes]:
        chunks = []
        logprobs = delta_logprobs(delta) if self.logprobs else None
        if delta.text or logprobs:
            chunks.append(self.shape.delta_chunk(delta.text, index, logprobs))
        if delta.tool_calls:
            chunks.append(self.shape.tool_calls_chunk(delta.tool_calls, index))
        return chunks

    def finish(self, index: int, finish: Finish) -> list[bytes]:
        return [self.shape.finish_chunk(finish.finish_reason, index)]

    def end(self, usage: Usage) -> list[bytes]:
        tail = [self.shape.usage_chunk(usage)] if self.include_usage else []
        return [*tail, SSE_DONE]

    def error(self, error: LichenError) -> list[bytes]:
        return [sse(error.openai_body()), SSE_DONE]

    def full(self, answers: list[Answer], usage: Usage) -> dict[str, Any]:
        choices = []
        for index, answer in enumerate(answers):
            logprobs = answer.logprobs if self.logprobs else None
            choices.append(
                self.shape.choice(
                    index, answer.text, answer.finish.finish_reason, answer.tool_calls, logprobs
                )
            )
        return self.shape.body(choices, usage)


__all__ = ["OpenAIRenderer", "OpenAIRoute", "delta_logprobs", "usage_body"]
