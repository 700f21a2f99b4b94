"""Choosing a node: candidates by model and health, ranked by expected time to first token."""

from __future__ import annotations

from collections.abc import Iterable

from lichen.errors import ErrorCode, LichenError
from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry

AUTO_MODEL = "auto"
TYPICAL_ANSWER_TOKENS = 128


def expected_ttft_s(conn: NodeConnection, model: str) -> float:
    """A cheap estimate of how long a new job would wait for its first token.

    A free slot answers at once; past the slots, each job ahead costs about one
    typical answer at the node's measured speed. Failures inflate the estimate
    so that flaky nodes lose ties.
    """
    st = conn.state
    slots = sum(m.slots for m in st.manifest.models if m.name == model) or 1
    ahead = max(0, st.inflight - slots + 1)
    speed = st.tokens_per_s or 50.0
    wait = ahead * TYPICAL_ANSWER_TOKENS / speed
    reliability = (st.served + 1) / (st.served + st.failures + 1)
    return (wait + 0.001 * st.inflight) / reliability


class Scheduler:
    """Ranks the registry's nodes for a request."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def resolve_model(self, requested: str) -> str:
        """Map ``auto`` to the model most nodes serve; check the others exist."""
        counts = self.registry.model_counts()
        if requested == AUTO_MODEL:
            if not counts:
                raise LichenError(ErrorCode.NO_CAPACITY, "no node is serving any model right now")
            return max(sorted(counts), key=lambda name: counts[name])
        if requested not in counts:
            raise LichenError(
                ErrorCode.MODEL_NOT_FOUND,
                f"The model `{requested}` does not exist or no node serves it",
                param="model",
            )
        return requested

    def candidates(self, model: str, exclude: Iterable[str] = ()) -> list[NodeConnection]:
        """Healthy nodes serving ``model``, best first."""
        skip = set(exclude)
        nodes = [
            c
            for c in self.registry.serving(model)
            if not c.state.draining and c.peer_id not in skip
        ]
        return sorted(nodes, key=lambda c: expected_ttft_s(c, model))
