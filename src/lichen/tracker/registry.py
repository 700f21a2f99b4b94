"""The live registry of connected nodes (in memory; one per tracker process).

Besides nodes by peer id it keeps, per model, the list of nodes serving it, so
that the scheduler can pick among the servers of one model in time that does
not grow with the size of the network (it samples that list; see
:mod:`lichen.routing.scheduler`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence

from lichen.tracker.connection import NodeConnection
from lichen.wire.messages import ManifestBody

log = logging.getLogger(__name__)


class _Servers:
    """Nodes serving one model: a list for O(1) random access plus positions for O(1) removal."""

    __slots__ = ("nodes", "positions")

    def __init__(self) -> None:
        self.nodes: list[NodeConnection] = []
        self.positions: dict[str, int] = {}

    def add(self, conn: NodeConnection) -> None:
        self.positions[conn.peer_id] = len(self.nodes)
        self.nodes.append(conn)

    def remove(self, conn: NodeConnection) -> None:
        index = self.positions.pop(conn.peer_id, None)
        if index is None:
            return
        last = self.nodes.pop()
        if last is not conn:  # move the last node into the hole
            self.nodes[index] = last
            self.positions[last.peer_id] = index


class Registry:
    """Connected nodes by peer id, and what they serve."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeConnection] = {}
        self._servers: dict[str, _Servers] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[NodeConnection]:
        return iter(list(self._nodes.values()))

    def get(self, peer_id: str) -> NodeConnection | None:
        return self._nodes.get(peer_id)

    def add(self, conn: NodeConnection) -> NodeConnection | None:
        """Register ``conn``; return the connection it replaces (same peer), if any."""
        previous = self._nodes.get(conn.peer_id)
        if previous is not None:
            self._unindex(previous)
        self._nodes[conn.peer_id] = conn
        for name in conn.state.model_names:
            self._servers.setdefault(name, _Servers()).add(conn)
        log.info(
            "node %s (%s) joined serving %s",
            conn.name,
            conn.peer_id,
            ", ".join(conn.state.model_names) or "nothing",
        )
        return previous

    def remove(self, conn: NodeConnection) -> bool:
        """Unregister ``conn`` (not a newer connection of the same peer); True if it was in."""
        if self._nodes.get(conn.peer_id) is not conn:
            return False
        del self._nodes[conn.peer_id]
        self._unindex(conn)
        log.info("node %s (%s) left", conn.name, conn.peer_id)
        return True

    def update_manifest(self, conn: NodeConnection, manifest: ManifestBody) -> None:
        """``conn`` sent a newer manifest: re-index it under the models it serves now."""
        registered = self._nodes.get(conn.peer_id) is conn
        if registered:
            self._unindex(conn)
        conn.state.set_manifest(manifest)
        if registered:
            for name in conn.state.model_names:
                self._servers.setdefault(name, _Servers()).add(conn)
        log.info(
            "node %s (%s) now serves %s",
            conn.name,
            conn.peer_id,
            ", ".join(conn.state.model_names) or "nothing",
        )

    def _unindex(self, conn: NodeConnection) -> None:
        for name in conn.state.model_names:
            servers = self._servers.get(name)
            if servers is None:
                continue
            servers.remove(conn)
            if not servers.nodes:
                del self._servers[name]

    def serving(self, model: str) -> Sequence[NodeConnection]:
        """Nodes serving ``model`` (a live view: do not keep it across awaits)."""
        servers = self._servers.get(model)
        return servers.nodes if servers is not None else ()

    def has_model(self, model: str) -> bool:
        return model in self._servers

    def most_served_model(self) -> str | None:
        """The model the most nodes serve (ties: the first name in sort order)."""
        if not self._servers:
            return None
        return max(sorted(self._servers), key=lambda name: len(self._servers[name].nodes))

    def model_counts(self) -> dict[str, int]:
        """Model name -> number of connected, non-draining nodes serving it."""
        counts: Counter[str] = Counter()
        for name, servers in self._servers.items():
            counts[name] = sum(1 for conn in servers.nodes if not conn.state.draining)
        return {name: n for name, n in counts.items() if n}
