"""What the operator's node page shows about the node running in this process."""

from __future__ import annotations

import time
from typing import Any

from lichen.tracker.api import node_state
from lichen.web.deps import WebDeps
from lichen.web.network_view import audit_view, hardware_text, shown_reputation


async def node_info(deps: WebDeps) -> dict[str, Any] | None:
    """The local node's identity, work and setup; None when it is not connected here."""
    peer_id = deps.local_peer_id
    conn = deps.registry.get(peer_id) if peer_id is not None else None
    if peer_id is None or conn is None:
        return None
    manifest = conn.state.manifest
    info: dict[str, Any] = {
        "peer_id": peer_id,
        "name": manifest.name,
        "state": node_state(conn),
        "uptime_s": int(time.time() - deps.started),
        "credits": None,  # filled in by the accounting service when there is one
        "telemetry": deps.telemetry_setting.enabled(),
        "engines": list(manifest.engines),
        "models": [
            {"name": m.name, "engine": m.engine, "context": m.context, "slots": m.slots}
            for m in manifest.models
        ],
        "hardware": hardware_text(manifest.hardware),
        "cpu": manifest.hardware.cpu,
        "tokens_per_s": round(conn.state.tokens_per_s, 1),
        "reputation": round(shown_reputation(conn, deps.reputation), 3),
        "failures": conn.state.failures,
        "served": conn.state.served,
        "served_now": conn.state.served,  # since this connection (what the network page counts)
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "tokens": 0,
    }
    info["audits_on"] = deps.audits is not None  # the tracker audits nodes (issue 11)
    info["audit"] = audit_view(deps.audits.record_of(peer_id)) if deps.audits else None
    if deps.requests is not None:
        stats = await deps.requests.node_stats(peer_id)
        info.update(
            served=stats["requests"],
            prompt_tokens=stats["prompt_tokens"],
            completion_tokens=stats["completion_tokens"],
            tokens=stats["tokens"],
        )
    return info
