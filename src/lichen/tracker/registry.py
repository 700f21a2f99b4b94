"""The live registry of connected nodes (in memory; one per tracker process)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

from lichen.tracker.connection import NodeConnection

log = logging.getLogger(__name__)


class Registry:
    """Connected nodes by peer id, and what they serve."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeConnection] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[NodeConnection]:
        return iter(list(self._nodes.values()))

    def get(self, peer_id: str) -> NodeConnection | None:
        return self._nodes.get(peer_id)

    def add(self, conn: NodeConnection) -> NodeConnection | None:
        """Register ``conn``; return the connection it replaces (same peer), if any."""
        previous = self._nodes.get(conn.peer_id)
        self._nodes[conn.peer_id] = conn
        log.info(
            "node %s (%s) joined serving %s",
            conn.name,
            conn.peer_id,
            ", ".join(m.name for m in conn.state.manifest.models) or "nothing",
        )
        return previous

    def remove(self, conn: NodeConnection) -> None:
        if self._nodes.get(conn.peer_id) is conn:
            del self._nodes[conn.peer_id]
            log.info("node %s (%s) left", conn.name, conn.peer_id)

    def serving(self, model: str) -> list[NodeConnection]:
        return [c for c in self._nodes.values() if c.state.serves(model)]

    def model_counts(self) -> dict[str, int]:
        """Model name -> number of connected, non-draining nodes serving it."""
        counts: Counter[str] = Counter()
        for conn in self._nodes.values():
            if conn.state.draining:
                continue
            for model in conn.state.manifest.models:
                counts[model.name] += 1
        return dict(counts)
