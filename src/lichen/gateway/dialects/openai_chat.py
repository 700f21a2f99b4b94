"""``POST /v1/chat/completions``: OpenAI's chat dialect over the one answer path."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from lichen.gateway.answer import Call, answer
from lichen.gateway.completions import CompletionService
from lichen.gateway.dialects.openai import OpenAIRenderer, OpenAIRoute
from lichen.gateway.dialects.route import dialect_router
from lichen.gateway.responses import ResponseShape
from lichen.gateway.schemas import ChatCompletionRequest


def chat_router(service: CompletionService) -> APIRouter:
    router = dialect_router(OpenAIRoute, tags=["OpenAI"])

    @router.post("/v1/chat/completions", response_model=None, summary="Chat completion")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        model = service.resolve_model(body.model, tools=body.wants_tools)
        wire = body.to_wire(model)
        shape = ResponseShape(kind="chat", model=body.model if body.model != "auto" else model)
        renderer = OpenAIRenderer(
            shape, n=body.n or 1, include_usage=body.include_usage, logprobs=body.logprobs
        )
        call = Call(
            wire=wire,
            kind="chat",
            stream=body.stream,
            n=body.n or 1,
            headers=request.headers,
            extra=body.model_extra or {},
            user=body.user,
        )
        return await answer(service, call, renderer, request)

    return router
