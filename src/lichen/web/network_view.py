"""What the network dashboard shows: nodes, models and request rates, as plain JSON data.

Built from the tracker's live registry and the gateway's request log; the same
data renders the first page and answers the dashboard's 2-second polls.
"""

from __future__ import annotations

from typing import Any

from lichen import clock
from lichen.reputation.book import Reputation
from lichen.storage.repositories import RequestLogRepository
from lichen.tracker.api import AuditRecords, describe_node
from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry
from lichen.wire.messages import Hardware

HISTORY_MINUTES = 30


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


def shown_reputation(conn: NodeConnection, reputation: Reputation | None = None) -> float:
    """The reputation people read: the share of the node's jobs that finished.

    From the reputation book's all-time counts when it keeps them, else from this
    connection's counts; 100% for a node that never failed (and for one with no jobs
    yet). The scheduler's own score (which also discounts new identities) stays in
    ``/v1/network``.
    """
    reliability = getattr(reputation, "reliability", None)
    if callable(reliability):
        value = reliability(conn.peer_id)
        if isinstance(value, float):
            return value
    st = conn.state
    done = st.served + st.failures
    return st.served / done if done else 1.0


def audit_view(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A node's audit record as the dashboard shows it: counts, quarantine, and the kinds
    and details of its latest failure (never token text). None: never audited."""
    if record is None:
        return None
    failure = record.get("last_failure")
    return {
        "audits": record["audits"],
        "failed": record["failed"],
        "quarantined": record["quarantined"],
        "last_failure": (
            {
                "created_ms": failure["created_ms"],
                "findings": [
                    {"kind": f["kind"], "detail": f["detail"]} for f in failure["findings"]
                ],
            }
            if failure
            else None
        ),
    }


def node_row(
    conn: NodeConnection,
    reputation: Reputation | None = None,
    audits: AuditRecords | None = None,
) -> dict[str, Any]:
    """``describe_node``'s JSON (as ``/v1/network`` shows it) plus what the dashboard draws."""
    row = describe_node(conn, reputation)
    row["audit"] = audit_view(audits.record_of(conn.peer_id)) if audits is not None else None
    slots = sum(conn.state.slots.values()) or 1
    row["reputation"] = round(shown_reputation(conn, reputation), 3)
    row.update(
        tokens_per_s=round(conn.state.tokens_per_s, 1),
        hardware_text=hardware_text(conn.state.manifest.hardware),
        model_names=[m["name"] for m in row["models"]],
        slots_total=slots,
        load=min(1.0, (conn.state.inflight + conn.state.queue_depth) / slots),
    )
    return row


def nodes(
    registry: Registry,
    reputation: Reputation | None = None,
    audits: AuditRecords | None = None,
) -> list[dict[str, Any]]:
    rows = [node_row(conn, reputation, audits) for conn in registry]
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


async def snapshot(
    registry: Registry,
    repo: RequestLogRepository | None,
    reputation: Reputation | None = None,
    audits: AuditRecords | None = None,
) -> dict[str, Any]:
    now_ms = clock.now_ms()
    node_list = nodes(registry, reputation, audits)
    return {
        "generated_ms": now_ms,
        "nodes": node_list,
        "models": models(registry),
        "requests": await request_rates(repo, now_ms),
        "tokens_per_s": round(sum(n["tokens_per_s"] for n in node_list), 1),
        "audits_on": audits is not None,  # the tracker audits nodes (issue 11)
    }
