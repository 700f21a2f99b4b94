"""The tracker's HTTP surface: the node link endpoint and ``GET /v1/network``.

``/v1/network`` is the live view ``lichen network show`` and dashboards read:
connected nodes with their hardware, models, load and scheduling state. It is
metadata only; nothing about any request's content is kept here to show.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from fastapi import Depends, FastAPI, Query
from fastapi.responses import JSONResponse

from lichen.http.operator import OperatorGate
from lichen.reputation.book import Reputation
from lichen.tracker.connection import NodeConnection
from lichen.tracker.service import NODE_PATH, TrackerService

NETWORK_PATH = "/v1/network"
AUDITS_PATH = "/v1/network/audits"
MAX_LISTED = 1000


class AuditRecords(Protocol):
    """Nodes' audit records (``lichen.audit.service.AuditService``)."""

    def record_of(self, peer_id: str, *, recent: int = 0) -> dict[str, Any] | None: ...

    def records(self, *, recent: int = 0) -> dict[str, dict[str, Any]]: ...


def node_state(conn: NodeConnection) -> str:
    st = conn.state
    if st.draining:
        return "draining"
    if st.inflight >= sum(st.slots.values()):
        return "busy"
    return "ready"


def describe_node(conn: NodeConnection, reputation: Reputation | None = None) -> dict[str, Any]:
    """One node as JSON: identity, hardware, models, load. Never request content."""
    st = conn.state
    manifest = st.manifest
    hw = manifest.hardware
    ttft = reputation.ttft_s(conn.peer_id) if reputation is not None else None
    return {
        "peer_id": conn.peer_id,
        "name": manifest.name,
        "trust": conn.peer.trust,
        "state": node_state(conn),
        "hardware": {"cpu": hw.cpu, "cores": hw.cores, "ram_mb": hw.ram_mb, "gpu": hw.gpu},
        "engines": list(manifest.engines),
        "models": [
            {"name": m.name, "sha256": m.sha256, "engine": m.engine, "slots": m.slots}
            for m in manifest.models
        ],
        "free_slots": st.free_slots,
        "queue_depth": st.queue_depth,
        "tokens_per_s": round(st.tokens_per_s, 2),
        "inflight": st.inflight,
        "served": st.served,
        "failures": st.failures,
        "reputation": round(reputation.score(conn.peer_id), 3) if reputation else None,
        "ttft_ms": round(ttft * 1000) if ttft is not None else None,
        "connected_s": round(time.time() - st.connected_at, 1),
        "last_seen_s": round(time.monotonic() - st.last_seen, 2),
    }


def mount_tracker(
    app: FastAPI,
    tracker: TrackerService,
    reputation: Reputation | None = None,
    operator: OperatorGate | None = None,  # /v1/network is an operator surface
    *,
    audits: AuditRecords | None = None,  # each node's audit record (issue 11)
) -> None:
    """Add the node link (WebSocket) and the live network view to ``app``."""
    app.add_api_websocket_route(NODE_PATH, tracker.endpoint)

    async def network(limit: int = Query(MAX_LISTED, ge=0, le=100_000)) -> JSONResponse:
        conns = list(tracker.registry)
        conns.sort(key=lambda c: (c.state.manifest.name, c.peer_id))
        return JSONResponse(
            {
                "object": "network",
                "nodes_total": len(conns),
                "models": tracker.registry.model_counts(),
                "nodes": [
                    describe_node(c, reputation)
                    | ({"audit": audits.record_of(c.peer_id)} if audits is not None else {})
                    for c in conns[:limit]
                ],
            }
        )

    app.add_api_route(
        NETWORK_PATH,
        network,
        methods=["GET"],
        dependencies=[Depends(operator or OperatorGate("open"))],
    )

    async def audit_records(
        peer: str = Query("", max_length=128), recent: int = Query(10, ge=0, le=20)
    ) -> JSONResponse:
        """Audit records and recent evidence, of every audited node or of ``peer`` (a prefix)."""
        records = audits.records(recent=recent) if audits is not None else {}
        if peer:
            records = {p: r for p, r in records.items() if p.startswith(peer)}
        return JSONResponse({"object": "audits", "enabled": audits is not None, "nodes": records})

    app.add_api_route(
        AUDITS_PATH,
        audit_records,
        methods=["GET"],
        dependencies=[Depends(operator or OperatorGate("open"))],
    )
