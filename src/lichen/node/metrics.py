"""A node's Prometheus metrics (``lichen_node_``), read from its job runner and engine
at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lichen.engines.base import Engine
from lichen.node.jobs import JobRunner


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
