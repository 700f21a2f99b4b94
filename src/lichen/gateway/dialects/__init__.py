"""The gateway's API dialects: one thin adapter per dialect over one answer path.

Each dialect module holds its routes (typed bodies, so ``/openapi.json``
documents them), its renderer (neutral events in, its own bytes out) and its
error shape; all of them answer through :func:`lichen.gateway.answer.answer`.
"""

from __future__ import annotations

from fastapi import FastAPI

from lichen.gateway.completions import CompletionService
from lichen.gateway.dialects.anthropic_messages import messages_router
from lichen.gateway.dialects.ollama import OllamaApi, register_ollama
from lichen.gateway.dialects.openai_chat import chat_router
from lichen.gateway.dialects.openai_completions import completions_router
from lichen.gateway.dialects.openai_responses import responses_router
from lichen.gateway.dialects.route import MAX_BODY_STATE
from lichen.gateway.embeddings import EmbeddingService, embeddings_router
from lichen.tracker.registry import Registry


def install_dialects(
    app: FastAPI,
    registry: Registry,
    completions: CompletionService,
    embeddings: EmbeddingService,
) -> None:
    """Mount every dialect's routes on the gateway app."""
    setattr(app.state, MAX_BODY_STATE, completions.max_request_bytes)
    app.include_router(chat_router(completions))
    app.include_router(completions_router(completions))
    app.include_router(responses_router(completions))
    app.include_router(embeddings_router(embeddings))
    app.include_router(messages_router(completions))
    register_ollama(app, OllamaApi(registry, completions, embeddings))
