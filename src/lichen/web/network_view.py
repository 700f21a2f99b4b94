"""What the network dashboard shows: nodes, models and request rates, as plain JSON data.

Built from the tracker's live registry and the gateway's request log; the same
data renders the first page and answers the dashboard's 2-second polls.
"""

from __future__ import annotations

import time
from typing import Any

from lichen.storage.repositories import RequestLogRepository
from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry
from lichen.wire.messages import Hardware

HISTORY_MINUTES = 30
STALE_AFTER_S = 5.0


def hardware_text(hw: Hardware) -> str:
    """``"8 cores · 16 GiB · RTX 4090"`` (CPU model left out: it is long and in the title)."""
    parts: list[str] = []
    if hw.cores:
        parts.append(f"{hw.cores} cores")
    if hw.ram_mb:
        parts.append(f"{hw.ram_mb / 1024:.0f} GiB")
    if hw.gpu:
        parts.append(hw.gpu)
    return " · ".join(parts) or "unknown"


def reputation(conn: NodeConnection) -> float:
    """Share of jobs finished without a failure, smoothed like the scheduler's reliability."""
    st = conn.state
    return (st.served + 1) / (st.served + st.failures + 1)


def node_state(conn: NodeConnection, now_monotonic: float) -> str:
    st = conn.state
    if st.draining:
        return "draining"
    if now_monotonic - st.last_seen > STALE_AFTER_S:
        return "stale"
    if st.inflight > 0 or st.queue_depth > 0:
        return "busy"
    return "idle"


def node_row(conn: NodeConnection, now_monotonic: float, now: float) -> dict[str, Any]:
    st = conn.state
    manifest = st.manifest
    slots = sum(m.slots for m in manifest.models) or 1
    return {
        "peer_id": conn.peer_id,
        "name": manifest.name,
        "hardware": hardware_text(manifest.hardware),
        "cpu": manifest.hardware.cpu,
        "models": [m.name for m in manifest.models],
        "engines": list(manifest.engines),
        "trust": manifest.trust,
        "state": node_state(conn, now_monotonic),
        "inflight": st.inflight,
        "slots": slots,
        "queue_depth": st.queue_depth,
        "load": min(1.0, (st.inflight + st.queue_depth) / slots),
        "tokens_per_s": round(st.tokens_per_s, 1),
        "served": st.served,
        "failures": st.failures,
        "reputation": round(reputation(conn), 3),
        "connected_s": max(0, int(now - st.connected_at)),
    }


def nodes(registry: Registry) -> list[dict[str, Any]]:
    now_monotonic, now = time.monotonic(), time.time()
    rows = [node_row(conn, now_monotonic, now) for conn in registry]
    return sorted(rows, key=lambda row: (row["name"], row["peer_id"]))


def models(registry: Registry) -> list[dict[str, Any]]:
    counts = registry.model_counts()
    return [{"name": name, "nodes": counts[name]} for name in sorted(counts)]


async def request_rates(repo: RequestLogRepository | None, now_ms: int) -> dict[str, Any]:
    """Requests in the last 60 s, and per minute over the last ``HISTORY_MINUTES`` minutes."""
    if repo is None:
        return {"per_minute": 0, "history": [0] * HISTORY_MINUTES, "available": False}
    this_minute = now_ms // 60_000
    first = this_minute - HISTORY_MINUTES + 1
    by_minute = await repo.per_minute(first * 60_000)
    last_60s = await repo.stats_since(now_ms - 60_000)
    return {
        "per_minute": last_60s["requests"],
        "history": [by_minute.get(first + i, 0) for i in range(HISTORY_MINUTES)],
        "available": True,
    }


async def snapshot(registry: Registry, repo: RequestLogRepository | None) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    node_list = nodes(registry)
    return {
        "generated_ms": now_ms,
        "nodes": node_list,
        "models": models(registry),
        "requests": await request_rates(repo, now_ms),
        "tokens_per_s": round(sum(n["tokens_per_s"] for n in node_list), 1),
    }
