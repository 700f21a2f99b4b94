"""The gateway's ASGI app: OpenAI-compatible API, health, and the web UI mount point.

``create_app`` only wires routes to services handed in; it builds nothing itself,
so tests can drive it in-process with any registry and router.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

from lichen import __version__
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.body_limit import BodyLimitMiddleware, BodyLimits
from lichen.gateway.completions import CompletionService
from lichen.gateway.dialects import install_dialects
from lichen.gateway.docs_ui import install_docs
from lichen.gateway.embeddings import EmbeddingService
from lichen.gateway.metrics import GatewayMetrics, MetricsMiddleware
from lichen.gateway.origin import HostPolicy, OriginGuardMiddleware
from lichen.gateway.services import GatewayServices
from lichen.http.errors import install_error_handlers
from lichen.http.operator import OperatorGate
from lichen.metrics import metrics_endpoint
from lichen.routing.capabilities import model_capabilities
from lichen.routing.embed import EmbeddingRouter
from lichen.tracker.registry import Registry


@dataclass
class GatewayDeps:
    registry: Registry
    completions: CompletionService
    started: float = 0.0
    metrics: GatewayMetrics | None = None  # serves /metrics and counts requests when set
    embeddings: EmbeddingService | None = None  # default: routed over completions' scheduler
    accounting: GatewayServices | None = None  # /v1/auth, /v1/account, quotas, credits
    body_limits: BodyLimits | None = None  # default: the completions' max_request_bytes
    hosts: HostPolicy | None = None  # Host names served (DNS rebinding); default: any
    operator: OperatorGate | None = None  # guards operator surfaces (/metrics); None: open
    # Extra /health checks: each returns a problem ("engine_stalled") or None. `lichen up`
    # adds its in-process engine's watchdog here.
    health_checks: list[Callable[[], str | None]] = field(default_factory=list)


def _model_card(name: str, nodes: int, created: int) -> dict[str, object]:
    return {"id": name, "object": "model", "created": created, "owned_by": "lichen", "nodes": nodes}


def create_app(deps: GatewayDeps) -> FastAPI:
    app = FastAPI(
        title="Lichen gateway",
        version=__version__,
        docs_url=None,  # /docs and /openapi.json: install_docs (vendored assets, operator gate)
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)
    limits = deps.body_limits or BodyLimits(inference_bytes=deps.completions.max_request_bytes)
    shared = deps.accounting.limiter if deps.accounting is not None else None  # redis_url
    app.add_middleware(BodyLimitMiddleware, limits=limits, limiter=shared)  # before any handler
    app.add_middleware(OriginGuardMiddleware, policy=deps.hosts)  # Host, Origin (outside it)
    created = int(deps.started or time.time())

    @app.get("/health")
    async def health() -> JSONResponse:
        counts = deps.registry.model_counts()
        problem = next((p for p in (check() for check in deps.health_checks) if p), None)
        ready = bool(counts) and problem is None
        return JSONResponse(
            {
                "status": problem or ("ok" if ready else "no_capacity"),
                "version": __version__,
                "nodes": len(deps.registry),
                "models": counts,
            },
            status_code=200 if ready else 503,
        )

    @app.get("/v1/models")
    async def list_models() -> JSONResponse:
        counts = deps.registry.model_counts()
        data = [
            _model_card(name, n, created) | model_capabilities(deps.registry, name)
            for name, n in sorted(counts.items())
        ]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> JSONResponse:
        counts = deps.registry.model_counts()
        if model_id not in counts:
            raise LichenError(
                ErrorCode.MODEL_NOT_FOUND,
                f"The model `{model_id}` does not exist or no node serves it",
                param="model",
            )
        card = _model_card(model_id, counts[model_id], created)
        return JSONResponse(card | model_capabilities(deps.registry, model_id))

    embeddings = deps.embeddings or EmbeddingService(
        router=EmbeddingRouter(
            deps.completions.scheduler,
            answer_timeout_s=deps.completions.router.first_token_timeout_s,
        ),
        max_request_bytes=deps.completions.max_request_bytes,
        timeout_s=deps.completions.timeout_s,
        answers=deps.completions,
    )
    install_dialects(app, deps.registry, deps.completions, embeddings)
    install_docs(app, [Depends(deps.operator or OperatorGate("open"))])  # no CDN
    if deps.accounting is not None:
        deps.accounting.install(app)
    if deps.metrics is not None:
        app.add_middleware(MetricsMiddleware, metrics=deps.metrics)
        endpoint = metrics_endpoint(deps.metrics.registry)
        app.add_api_route(
            "/metrics",
            endpoint,
            methods=["GET"],
            include_in_schema=False,
            dependencies=[Depends(deps.operator or OperatorGate("open"))],
        )
    return app
