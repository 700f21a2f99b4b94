"""The tracker's Prometheus metrics (``lichen_tracker_``), read from the live registry
at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lichen.tracker.registry import Registry


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
