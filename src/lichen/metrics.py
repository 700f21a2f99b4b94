"""Prometheus metrics for the gateway, the tracker and the node: numbers, never content.

Each role's metrics carry its prefix (``lichen_gateway_``, ``lichen_tracker_``,
``lichen_node_``) so that the one process of ``lichen up`` can expose all three
from one :class:`~prometheus_client.CollectorRegistry`. Labels are bounded and
content-free: a route *template* (``/v1/models/{model_id}``, never the path a
client sent), a method, a status, a model name the network serves, a direction.
No prompt, completion, API key or client address is ever a label or a value.

The tracker and node metrics are read at scrape time from the live objects
(:class:`TrackerCollector`, :class:`NodeCollector`), so the hot paths do no
metrics work beyond counting integers they already keep.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lichen.engines.base import Engine
from lichen.node.jobs import JobRunner
from lichen.tracker.registry import Registry
from lichen.wire.messages import Usage

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class GatewayMetrics:
    """The gateway's request, token, latency and time-to-first-token metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "lichen_gateway_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "lichen_gateway_request_duration_seconds",
            "Time from request to the end of the response (streams included), by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "lichen_gateway_time_to_first_token_seconds",
            "Time from request to the first generated text, by API kind.",
            ["kind"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "lichen_gateway_tokens",
            "Tokens processed, by direction (in: prompt, out: completion) and model.",
            ["direction", "model"],
            registry=registry,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.duration.labels(route=route).observe(seconds)

    def observe_answer(self, kind: str, model: str, ttft_ms: int | None, usage: Usage) -> None:
        if ttft_ms is not None:
            self.ttft.labels(kind=kind).observe(ttft_ms / 1000)
        if model and usage.reported:
            self.tokens.labels(direction="in", model=model).inc(usage.prompt_tokens)
            self.tokens.labels(direction="out", model=model).inc(usage.completion_tokens)


def _route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "other"


class MetricsMiddleware:
    """Counts every HTTP request by route template and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(
                _route_label(scope),
                str(scope.get("method", "")),
                status,
                time.perf_counter() - started,
            )


class TrackerCollector(Collector):
    """Nodes connected, jobs in flight and queue depth, read from the live registry."""

    def __init__(self, registry: Registry) -> None:
        self.nodes = registry

    def collect(self) -> Iterator[Metric]:
        conns = list(self.nodes)
        yield GaugeMetricFamily(
            "lichen_tracker_nodes_connected", "Nodes with a live link.", value=len(conns)
        )
        yield GaugeMetricFamily(
            "lichen_tracker_nodes_draining",
            "Connected nodes that are finishing their jobs before leaving.",
            value=sum(1 for c in conns if c.state.draining),
        )
        yield GaugeMetricFamily(
            "lichen_tracker_jobs_in_flight",
            "Jobs the tracker has sent to nodes and not yet seen finish.",
            value=sum(c.state.inflight for c in conns),
        )
        yield GaugeMetricFamily(
            "lichen_tracker_queue_depth",
            "Jobs waiting for a slot on their node, as the nodes last reported.",
            value=sum(c.state.queue_depth for c in conns),
        )
        yield GaugeMetricFamily(
            "lichen_tracker_free_slots",
            "Idle slots across the network, as the nodes last reported.",
            value=sum(c.state.free_slots for c in conns if not c.state.draining),
        )
        served = GaugeMetricFamily(
            "lichen_tracker_model_nodes", "Nodes serving each model.", labels=["model"]
        )
        for model, count in sorted(self.nodes.model_counts().items()):
            served.add_metric([model], count)
        yield served


class NodeCollector(Collector):
    """A node's jobs, tokens, speed and engine queue, read from its job runner and engine."""

    def __init__(self, runner: JobRunner, engine: Engine) -> None:
        self.runner = runner
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        stats = self.runner.stats
        jobs = CounterMetricFamily(
            "lichen_node_jobs", "Jobs this node finished, by outcome.", labels=["outcome"]
        )
        jobs.add_metric(["ok"], stats.jobs_ok)
        jobs.add_metric(["failed"], stats.jobs_failed)
        jobs.add_metric(["cancelled"], stats.jobs_cancelled)
        yield jobs
        tokens = CounterMetricFamily(
            "lichen_node_tokens", "Tokens this node processed, by direction.", labels=["direction"]
        )
        tokens.add_metric(["in"], stats.tokens_in)
        tokens.add_metric(["out"], stats.tokens_out)
        yield tokens
        yield CounterMetricFamily(
            "lichen_node_embeddings", "Vectors this node computed.", value=stats.embeddings
        )
        load = self.engine.load()
        yield GaugeMetricFamily(
            "lichen_node_jobs_running", "Jobs running on this node now.", value=len(self.runner)
        )
        yield GaugeMetricFamily(
            "lichen_node_tokens_per_second",
            "Recent decode speed measured by the engine.",
            value=load.tokens_per_s,
        )
        yield GaugeMetricFamily(
            "lichen_node_engine_queue_depth",
            "Jobs waiting for an engine slot.",
            value=load.queue_depth,
        )
        yield GaugeMetricFamily(
            "lichen_node_free_slots", "Idle engine slots.", value=load.free_slots
        )
        yield GaugeMetricFamily(
            "lichen_node_models", "Models the node serves now.", value=len(self.engine.models())
        )


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
