"""What audits conclude about nodes: per-node records, quarantine, forfeits, reputation.

Every verdict lands here. A failed audit forfeits the node's escrowed credits
(:class:`Penalties`, the ledger's escrow), counts as a failure in the scheduler's
reputation, and after ``quarantine_after`` failures the node is quarantined: the
scheduler gives it no more jobs until the operator releases it
(``lichen network audits PEER --release``: a :class:`ReleaseEntry`, stored too).
The operator's ``audit_sanction`` may add more at that point: the book calls its
``sanction`` hook once per quarantine (:mod:`lichen.audit.sanctions`: revoke the
membership). Evidence is kept per node (the most recent ``keep`` audits in memory;
every audit in the store); a release keeps it and resets only the failures that
count toward the next quarantine.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lichen.audit.verifier import Finding, Verdict
from lichen.clock import Clock, system_clock

log = logging.getLogger(__name__)

KEEP_PER_NODE = 20


class Penalties(Protocol):
    """The ledger's escrow: what a failed audit costs the node."""

    async def forfeit_pending(self, peer_id: str, *, reason: str) -> int:
        """Forfeit ``peer_id``'s escrowed credits; returns the micro-credits forfeited."""
        ...


Sanction = Callable[[str], Awaitable[None]]  # what more happens to a node at quarantine


class FailureSink(Protocol):
    """The part of the scheduler's reputation an audit failure reports to."""

    def job_failed(self, peer_id: str) -> None: ...


@dataclass(frozen=True)
class AuditEntry:
    """One audit, as kept and shown (evidence holds tokens only where allowed)."""

    created_ms: int
    peer_id: str
    model: str
    source: str  # "probe" | "traffic"
    probe_id: str  # "" for traffic
    passed: bool
    mode: str
    positions: int
    max_margin: float
    z: float
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class ReleaseEntry:
    """The operator lifted a node's quarantine (who, when and why; evidence is kept)."""

    created_ms: int
    peer_id: str
    by: str
    reason: str = ""


@dataclass
class NodeAudits:
    """A node's audit record."""

    audits: int = 0
    failures: int = 0
    strikes: int = 0  # failures since the last release: quarantine at ``quarantine_after``
    forfeited: int = 0  # micro-credits forfeited through failed audits
    slipped: int = 0  # passed greedy audits with slips since the last drift failure
    quarantined: bool = False
    last_ms: int = 0
    last_failure: AuditEntry | None = None  # the latest failed audit (shown as evidence)
    released: ReleaseEntry | None = None  # the latest release from quarantine
    recent: deque[AuditEntry] = field(default_factory=lambda: deque(maxlen=KEEP_PER_NODE))

    def summary(self) -> dict[str, object]:
        return {
            "audits": self.audits,
            "passed": self.audits - self.failures,
            "failed": self.failures,
            "quarantined": self.quarantined,
            "forfeited": self.forfeited,
            "last_ms": self.last_ms,
        }


Saver = Callable[[AuditEntry], Awaitable[None]]


def redact(findings: tuple[Finding, ...]) -> tuple[Finding, ...]:
    """Findings without any token text (for audits of real requests the policy keeps private)."""
    return tuple(
        Finding(f.kind, f.detail, position=f.position, score=f.score) if f.kind == "token" else f
        for f in findings
    )


class AuditBook:
    """Per-node audit records and the consequences of failing."""

    def __init__(
        self,
        *,
        quarantine_after: int = 2,
        slips_to_fail: int = 2,
        penalties: Penalties | None = None,
        reputation: FailureSink | None = None,
        save: Saver | None = None,
        sanction: Sanction | None = None,
        clock: Clock = system_clock,
    ) -> None:
        if quarantine_after < 1:
            raise ValueError("quarantine_after must be at least 1")
        self.quarantine_after = quarantine_after
        self.slips_to_fail = slips_to_fail  # slipping greedy audits that make one failure
        self.penalties = penalties
        self.reputation = reputation
        self._save = save
        self.sanction = sanction  # called once when a node is quarantined (not on load)
        self._clock = clock
        self._nodes: dict[str, NodeAudits] = {}

    def node(self, peer_id: str) -> NodeAudits | None:
        return self._nodes.get(peer_id)

    def quarantined(self, peer_id: str) -> bool:
        record = self._nodes.get(peer_id)
        return record is not None and record.quarantined

    def release(self, peer_id: str, *, by: str = "operator", reason: str = "") -> bool:
        """The operator lets a quarantined node serve again (False if it is not quarantined)."""
        record = self._nodes.get(peer_id)
        if record is None or not record.quarantined:
            return False
        created_ms = int(self._clock() * 1000)
        self.apply_release(ReleaseEntry(created_ms, peer_id, by=by, reason=reason))
        return True

    def apply_release(self, entry: ReleaseEntry) -> None:
        """Lift ``entry.peer_id``'s quarantine: its strikes reset, its evidence stays.

        Failures recorded after the release's time (a running tracker reads releases
        a poll late) still count, as they do when the history is replayed in order.
        """
        record = self._nodes.setdefault(entry.peer_id, NodeAudits())
        was = record.quarantined
        record.strikes = sum(
            1 for e in record.recent if not e.passed and e.created_ms > entry.created_ms
        )
        record.quarantined = record.strikes >= self.quarantine_after
        record.slipped = 0
        if record.released is None or entry.created_ms >= record.released.created_ms:
            record.released = entry
        if was and not record.quarantined:
            log.info("node %s released from audit quarantine by %s", entry.peer_id, entry.by)

    def snapshot(self) -> dict[str, NodeAudits]:
        return dict(self._nodes)

    def load(self, entries: Sequence[AuditEntry | ReleaseEntry]) -> None:
        """Rebuild the records from stored audits and releases (oldest first), without
        side effects (no forfeit, no sanction: those happened when they were recorded)."""
        for entry in entries:
            if isinstance(entry, ReleaseEntry):
                self.apply_release(entry)
            else:
                self._apply(entry)

    async def record(
        self,
        *,
        peer_id: str,
        model: str,
        verdict: Verdict,
        source: str = "probe",
        probe_id: str = "",
        keep_tokens: bool = True,
    ) -> AuditEntry:
        """Note one verdict and act on it: forfeit, reputation, quarantine."""
        verdict = self._drift(peer_id, verdict)
        entry = AuditEntry(
            created_ms=int(self._clock() * 1000),
            peer_id=peer_id,
            model=model,
            source=source,
            probe_id=probe_id,
            passed=verdict.passed,
            mode=verdict.mode,
            positions=verdict.positions,
            max_margin=round(verdict.max_margin, 4),
            z=round(verdict.z, 3),
            findings=verdict.findings if keep_tokens else redact(verdict.findings),
        )
        was_quarantined = self.quarantined(peer_id)
        record = self._apply(entry)
        if not entry.passed:
            kinds = ",".join(sorted({f.kind for f in entry.findings}))
            log.warning(
                "node %s failed an audit of %s (%s); %d failure(s)",
                peer_id,
                model,
                kinds,
                record.failures,
            )
            if self.reputation is not None:
                self.reputation.job_failed(peer_id)
            if self.penalties is not None:
                record.forfeited += await self.penalties.forfeit_pending(
                    peer_id, reason=f"audit failed: {kinds}"
                )
        if self._save is not None:
            await self._save(entry)
        if record.quarantined and not was_quarantined and self.sanction is not None:
            try:
                await self.sanction(peer_id)
            except Exception as exc:  # the quarantine holds even if the sanction fails
                log.warning("audit sanction on node %s failed: %s", peer_id, type(exc).__name__)
        return entry

    def _drift(self, peer_id: str, verdict: Verdict) -> Verdict:
        """A passing greedy verdict with slips counts toward a drift failure."""
        if not verdict.passed or verdict.slips == 0:
            return verdict
        record = self._nodes.setdefault(peer_id, NodeAudits())
        record.slipped += 1
        if record.slipped < self.slips_to_fail:
            return verdict
        record.slipped = 0
        finding = Finding(
            "drift",
            f"{self.slips_to_fail} greedy answers left the claimed model's top token",
            score=float(verdict.slips),
        )
        return dataclasses.replace(verdict, passed=False, findings=(finding,))

    def _apply(self, entry: AuditEntry) -> NodeAudits:
        record = self._nodes.setdefault(entry.peer_id, NodeAudits())
        record.audits += 1
        record.last_ms = max(record.last_ms, entry.created_ms)
        record.recent.append(entry)
        if not entry.passed:
            record.failures += 1
            record.strikes += 1
            if record.last_failure is None or entry.created_ms >= record.last_failure.created_ms:
                record.last_failure = entry
            if record.strikes >= self.quarantine_after and not record.quarantined:
                record.quarantined = True
                log.warning(
                    "node %s quarantined after %d failed audits", entry.peer_id, record.strikes
                )
        return record
