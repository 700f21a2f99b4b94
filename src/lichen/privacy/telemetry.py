"""Telemetry: off unless the node's operator opts in; counters only, never content.

The node side keeps :class:`TelemetryCounters` and, when opted in and the network
policy accepts telemetry, sends a :class:`~lichen.wire.messages.Telemetry` message
holding exactly the counters the policy lists. The tracker side
(:class:`TelemetrySink`) drops everything unless the policy stores telemetry, and
keeps only the listed counters even from a node that sends more.

The opt-in is ``LICHEN_TELEMETRY`` or a CLI flag when given, else the persisted
setting in ``<data_dir>/telemetry.json`` (the file the web UI's node page toggles).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.clock import now_ms
from lichen.privacy.policy import TELEMETRY_COUNTERS, DataClass, Policy
from lichen.storage.tables import TelemetryLog
from lichen.wire.messages import Telemetry

log = logging.getLogger(__name__)

SETTING_FILE = "telemetry.json"
DEFAULT_INTERVAL_S = 60.0


def telemetry_opt_in(data_dir: Path) -> bool:
    """The persisted choice; missing or unreadable means off."""
    try:
        value = json.loads((data_dir / SETTING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(value, dict) and value.get("enabled") is True


def set_telemetry_opt_in(data_dir: Path, enabled: bool) -> None:
    path = data_dir / SETTING_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps({"enabled": bool(enabled)}) + "\n", encoding="utf-8")
    os.replace(temp, path)
    log.info("telemetry %s", "enabled" if enabled else "disabled")


def telemetry_enabled(explicit: bool | None, data_dir: Path) -> bool:
    """``explicit`` (env var or CLI flag) when given, else the persisted setting."""
    return explicit if explicit is not None else telemetry_opt_in(data_dir)


def only_counters(msg: Telemetry, allowed: Iterable[str]) -> Telemetry:
    """``msg`` with every counter outside ``allowed`` unset."""
    keep = set(allowed)
    return msgspec.structs.replace(
        msg, **{name: None for name in TELEMETRY_COUNTERS if name not in keep}
    )


class TelemetryCounters:
    """What a node counts for telemetry: totals since start, no per-request detail."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self.requests = 0
        self.tokens = 0

    def job_finished(self, completion_tokens: int) -> None:
        self.requests += 1
        self.tokens += max(0, completion_tokens)

    def payload(
        self, allowed: Iterable[str], *, tokens_per_s: float, models: list[str]
    ) -> Telemetry:
        full = Telemetry(
            requests=self.requests,
            tokens=self.tokens,
            tokens_per_s=round(tokens_per_s, 2),
            models=sorted(models),
            uptime_s=int(self._clock() - self._started),
        )
        return only_counters(full, allowed)


def node_may_send(opted_in: bool, policy: Policy | None) -> bool:
    """Send only when the operator opted in and the network accepts telemetry."""
    return opted_in and policy is not None and policy.telemetry.opt_in


class TelemetryRepository:
    """The ``telemetry_log`` table (data class ``telemetry``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(self, peer_id: str, msg: Telemetry, now_ms: int) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                insert(TelemetryLog).values(
                    created_ms=now_ms,
                    peer_id=peer_id,
                    requests=msg.requests,
                    tokens=msg.tokens,
                    tokens_per_s=msg.tokens_per_s,
                    models=",".join(msg.models) if msg.models is not None else None,
                    uptime_s=msg.uptime_s,
                )
            )


class TelemetrySink:
    """The tracker's handler for Telemetry messages."""

    def __init__(self, policy: Policy, repository: TelemetryRepository | None) -> None:
        self.policy = policy
        self.repository = repository

    @property
    def accepting(self) -> bool:
        return (
            self.repository is not None
            and self.policy.telemetry.opt_in
            and self.policy.stores(DataClass.TELEMETRY, "tracker")
        )

    async def __call__(self, peer_id: str, msg: Telemetry) -> None:
        if not self.accepting or self.repository is None:
            return
        counters = only_counters(msg, self.policy.telemetry.counters)
        try:
            await self.repository.record(peer_id, counters, now_ms())
        except Exception as exc:  # telemetry must never break a node's link
            log.warning("could not store telemetry from %s: %s", peer_id, type(exc).__name__)
