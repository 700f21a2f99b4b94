"""The engine a node runs: its local GGUF models, an OpenAI-compatible upstream, or both.

``lichen up`` and ``lichen node`` both build it here. The node agent takes one
engine, so a node with a local model *and* an upstream gets a
:class:`~lichen.engines.composite.CompositeEngine` routing by model name.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry

from lichen.config import Settings
from lichen.engines.base import Engine
from lichen.engines.composite import CompositeEngine
from lichen.engines.openai_upstream import OpenAIEngine, UpstreamConfig
from lichen.errors import ErrorCode, LichenError
from lichen.identity.secrets import SecretStore
from lichen.metrics import metrics_app
from lichen.models import InstalledModel
from lichen.node.agent import NodeAgent
from lichen.node.metrics import NodeCollector
from lichen.roles.llama_engine import start_llamacpp
from lichen.server import HttpServer

log = logging.getLogger(__name__)


def upstream_config(settings: Settings) -> UpstreamConfig:
    """The upstream ``settings`` name, with its API key read from the secret store."""
    if not settings.upstream_url:
        raise LichenError(ErrorCode.INVALID_REQUEST, "no upstream URL is configured")
    if not settings.upstream_url.startswith(("http://", "https://")):
        raise LichenError(
            ErrorCode.INVALID_REQUEST,
            f"the upstream URL must start with http:// or https://: {settings.upstream_url!r}",
            param="upstream_url",
        )
    key = ""
    if settings.upstream_key_secret:
        key = SecretStore.for_data_dir(settings.data_dir).get(settings.upstream_key_secret)
    return UpstreamConfig(
        base_url=settings.upstream_url,
        api_key=key,
        refresh_s=settings.upstream_refresh_s,
        timeout_s=settings.request_timeout_s,
        slots=settings.upstream_slots,
        embeddings=settings.upstream_embeddings,
    )


async def start_node_engine(settings: Settings, local: list[InstalledModel]) -> Engine:
    """Start the engines for ``local`` models and the configured upstream, as one engine."""
    upstream = upstream_config(settings) if settings.upstream_url else None
    if not local and upstream is None:
        raise LichenError(
            ErrorCode.INVALID_REQUEST, "nothing to serve: no local model and no upstream"
        )
    engines: list[Engine] = []
    try:
        if local:
            engines.append(await start_llamacpp(settings, local))
        if upstream is not None:
            remote = await OpenAIEngine.start(upstream)
            engines.append(remote)
            if not remote.models():
                log.warning(
                    "upstream %s serves no models yet; re-checking every %.0fs",
                    upstream.root,
                    upstream.refresh_s,
                )
    except BaseException:
        for engine in engines:
            await engine.close()
        raise
    return engines[0] if len(engines) == 1 else CompositeEngine(engines)


async def start_node_metrics(
    settings: Settings, agent: NodeAgent, engine: Engine
) -> HttpServer | None:
    """Serve the node's Prometheus metrics on ``settings.metrics_port`` (loopback), if set."""
    if settings.metrics_port is None:
        return None
    registry = CollectorRegistry()
    registry.register(NodeCollector(agent.runner, engine))
    server = HttpServer(metrics_app(registry), host="127.0.0.1", port=settings.metrics_port)
    port = await server.start()
    log.info("node metrics on http://127.0.0.1:%d/metrics", port)
    return server
