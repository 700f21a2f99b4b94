"""The gateway's Prometheus metrics (``lichen_gateway_``): requests, tokens, latency and
time to first token, labelled by route template, never by what a client sent."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
