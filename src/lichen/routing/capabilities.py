"""What a model can do on a given node: tools, embeddings (from its signed manifest).

A model name may be served by several nodes with different engines (a local
GGUF without tool support here, an upstream API with it there), so capability
is a property of (node, model), and routing only sends a request that needs a
capability to nodes that advertise it.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry

Capability = Literal["tools", "embeddings"]


def supports(conn: NodeConnection, model: str, capability: Capability) -> bool:
    """Whether ``conn`` advertises ``capability`` for ``model``."""
    info = conn.state.model_info(model)
    return info is not None and bool(getattr(info, capability))


def any_supports(registry: Registry, model: str, capability: Capability) -> bool:
    """Whether at least one connected node offers ``capability`` for ``model``."""
    return any(supports(conn, model, capability) for conn in registry.serving(model))


def models_with(registry: Registry, capability: Capability) -> dict[str, int]:
    """Model name -> number of non-draining nodes offering ``capability`` for it."""
    counts: Counter[str] = Counter()
    for conn in registry:
        if conn.state.draining:
            continue
        for model in conn.state.manifest.models:
            if getattr(model, capability):
                counts[model.name] += 1
    return dict(counts)


def tool_support(registry: Registry, model: str) -> str:
    """How ``model`` serves tools on this network: the best any node offers.

    ``native`` (a chat template with tool calls), ``generic`` (JSON-schema-constrained
    calls, :mod:`lichen.engines.generic_tools`), or ``none``.
    """
    formats = set()
    for conn in registry.serving(model):
        info = conn.state.model_info(model)
        if info is not None and info.tools:
            formats.add(info.tool_format or "native")  # older manifests: a native template
    for best in ("native", "generic"):
        if best in formats:
            return best
    return "none"


def model_capabilities(registry: Registry, model: str) -> dict[str, object]:
    """What ``/v1/models`` says about ``model``: tool support and per-request context."""
    contexts = [
        info.context
        for conn in registry.serving(model)
        if (info := conn.state.model_info(model)) is not None
    ]
    return {"tools": tool_support(registry, model), "context_length": max(contexts, default=0)}
