"""Turning model specs into a running llama.cpp engine (shared by ``up`` and ``node``)."""

from __future__ import annotations

import logging

from lichen.config import Settings
from lichen.engines.grammar_guard import GrammarGuard
from lichen.engines.llamacpp import LlamaCppEngine, LlamaModelConfig
from lichen.engines.stderr_guard import silence_engine_stderr
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.limits import RequestLimits
from lichen.models import InstalledModel, ModelStore, Progress, pull

log = logging.getLogger(__name__)


def install_model(store: ModelStore, spec: str, progress: Progress | None = None) -> InstalledModel:
    """The model ``spec`` names (catalog name, path or URL), pulled first if it is missing."""
    try:
        return store.resolve(spec, progress=progress)
    except LichenError as error:
        if error.code is not ErrorCode.MODEL_NOT_FOUND:
            raise
        log.info("model %s is not installed; pulling it", spec)
        return pull(spec, store, progress=progress)


async def start_llamacpp(settings: Settings, models: list[InstalledModel]) -> LlamaCppEngine:
    """One engine serving ``models``, each with the slots and threads ``settings`` asks for.

    This is a node process: llama.cpp's own stderr (which can quote requests) is
    dropped from here on, and grammar work is bounded before it reaches the engine.
    """
    threads, batch_threads = settings.resolved_threads()
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise LichenError(ErrorCode.INVALID_REQUEST, f"a model is listed twice: {names}")
    silence_engine_stderr()
    guard = GrammarGuard(
        limits=RequestLimits.from_settings(settings).schema, budget_s=settings.grammar_budget_s
    )
    return await LlamaCppEngine.start(
        [
            LlamaModelConfig(
                name=model.name,
                path=model.path,
                sha256=model.sha256,
                parallel=settings.parallel,
                ctx_size=settings.ctx_size,
                kv_unified=settings.kv_unified,
                threads=threads,
                batch_threads=batch_threads,
                embeddings=settings.embeddings,
            )
            for model in models
        ],
        stall_s=settings.engine_stall_s,
        guard=guard,
    )
