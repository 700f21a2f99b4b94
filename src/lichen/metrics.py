"""Serving Prometheus metrics: numbers, never content.

Each role's metrics live beside what they measure and carry its prefix
(``lichen_gateway_``: :mod:`lichen.gateway.metrics`; ``lichen_tracker_``:
:mod:`lichen.tracker.metrics`; ``lichen_node_``: :mod:`lichen.node.metrics`), so that
the one process of ``lichen up`` can expose all three from one
:class:`~prometheus_client.CollectorRegistry`. Labels are bounded and content-free: a
route *template* (``/v1/models/{model_id}``, never the path a client sent), a method, a
status, a model name the network serves, a direction. No prompt, completion, API key or
client address is ever a label or a value.

The tracker and node metrics are read at scrape time from the live objects, so the hot
paths do no metrics work beyond counting integers they already keep.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client import generate_latest as _generate_latest
from starlette.requests import Request
from starlette.responses import Response


def generate_latest(registry: CollectorRegistry) -> bytes:
    return _generate_latest(registry)


def metrics_endpoint(registry: CollectorRegistry) -> Any:
    """A Starlette endpoint serving ``registry`` in Prometheus' text format."""

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


def metrics_app(registry: CollectorRegistry) -> FastAPI:
    """A tiny app serving only ``GET /metrics`` (a standalone node's metrics port)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.add_api_route("/metrics", metrics_endpoint(registry), methods=["GET"])
    return app
