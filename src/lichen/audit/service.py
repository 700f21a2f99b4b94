"""The tracker's audit service: reference engine, verdict book, evidence store, probe loop.

:meth:`AuditService.build` wires the parts the tracker needs from what it already
has (its models dir, database, registry, reputation, the ledger's escrow);
:meth:`start` loads stored audits and releases (so quarantine survives a restart),
starts the probe scheduler and polls the database for releases the operator's CLI
writes (``lichen network audits PEER --release``, like revocations: no admin API);
:meth:`stop` ends both and releases the reference engine.
The reference holds every model the tracker has installed locally; nodes serving
other models (or other weights) are simply not audited.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.audit.auditor import Auditor
from lichen.audit.book import AuditBook, FailureSink, NodeAudits, Penalties, Sanction
from lichen.audit.probes import ProbeFactory
from lichen.audit.rescoring import LlamaScorer, ReferenceModel
from lichen.audit.sanctions import sanction_for
from lichen.audit.scheduler import ProbeScheduler
from lichen.audit.store import AuditStore
from lichen.audit.traffic import ClaimedWeights, TrafficAudits
from lichen.config import Settings
from lichen.privacy.policy import Policy
from lichen.tasks import cancel_and_wait
from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry

log = logging.getLogger(__name__)


def reference_models(models_dir: Path, *, threads: int = 1) -> list[ReferenceModel]:
    """Every GGUF model installed in ``models_dir`` (names and hashes from its store)."""
    from lichen.models.store import ModelStore

    try:
        installed = ModelStore(models_dir).list()
    except OSError:
        return []
    return [
        ReferenceModel(name=m.name, path=m.path, sha256=m.sha256, threads=threads)
        for m in installed
        if m.path.suffix == ".gguf"
    ]


def audits_on(settings: Settings) -> bool:
    """Whether a tracker audits its nodes: ``LICHEN_AUDITS`` when set, else on for a
    public network (strangers' nodes: their word is not enough) and off for a private
    one (the owner's and invited machines). Turning audits on costs nothing at start:
    the reference model loads at the first probe, and only for models the tracker holds.
    """
    if settings.audits is not None:
        return settings.audits
    return settings.network_mode == "public"


def audit_json(record: NodeAudits | None, *, recent: int = 0) -> dict[str, Any] | None:
    """A node's audit record as JSON (``recent`` latest audits with their evidence)."""
    if record is None:
        return None
    out: dict[str, Any] = dict(record.summary())
    failure = record.last_failure
    out["last_failure"] = (
        {
            "created_ms": failure.created_ms,
            "model": failure.model,
            "source": failure.source,
            "probe_id": failure.probe_id,
            "findings": [  # kinds, details and scores: never token text
                {"kind": f.kind, "detail": f.detail, "position": f.position, "score": f.score}
                for f in failure.findings
            ],
        }
        if failure is not None
        else None
    )
    released = record.released
    out["released"] = (  # who and why only in the detailed view (the operator's)
        {"created_ms": released.created_ms}
        | ({"by": released.by, "reason": released.reason} if recent else {})
        if released is not None
        else None
    )
    if recent:
        out["recent"] = [
            {
                "created_ms": e.created_ms,
                "model": e.model,
                "source": e.source,
                "probe_id": e.probe_id,
                "passed": e.passed,
                "mode": e.mode,
                "positions": e.positions,
                "max_margin": e.max_margin,
                "z": e.z,
                "findings": [
                    {
                        "kind": f.kind,
                        "detail": f.detail,
                        "position": f.position,
                        "claimed": f.claimed,
                        "reference": f.reference,
                        "score": f.score,
                    }
                    for f in e.findings
                ],
            }
            for e in list(record.recent)[-recent:]
        ]
    return out


@dataclass
class AuditService:
    """Everything the audits need on a tracker."""

    book: AuditBook
    auditor: Auditor
    scorer: LlamaScorer
    probes: ProbeScheduler
    store: AuditStore | None = None
    traffic: TrafficAudits | None = None  # real answers re-scored, as the policy allows
    release_poll_s: float = 1.0  # how often the database is read for the operator's releases
    _task: asyncio.Task[None] | None = None
    _releases_task: asyncio.Task[None] | None = None
    _release_id: int = 0  # the last release row applied

    @classmethod
    def build(
        cls,
        *,
        models: list[ReferenceModel],
        nodes: Callable[[], Iterable[NodeConnection]],
        db: AsyncEngine | None = None,
        reputation: FailureSink | None = None,
        penalties: Penalties | None = None,
        budget: float = 0.02,
        quarantine_after: int = 2,
        timeout_s: float = 120.0,
        privacy_class: Callable[[], str] = lambda: "",
        policy: Callable[[], Policy] | None = None,
        claimed: ClaimedWeights | None = None,
        discover: Callable[[], list[ReferenceModel]] | None = None,
        sanction: Sanction | None = None,
        release_poll_s: float = 1.0,
    ) -> AuditService:
        """The parts wired together; with ``policy`` and ``claimed`` also the traffic
        audits the gateway taps real answers into (``TrafficAudits``)."""
        store = AuditStore(db) if db is not None else None
        book = AuditBook(
            quarantine_after=quarantine_after,
            penalties=penalties,
            reputation=reputation,
            save=store.save if store is not None else None,
            sanction=sanction,
        )
        scorer = LlamaScorer(models, discover=discover)
        auditor = Auditor(scorer, book)
        probes = ProbeScheduler(
            nodes,
            auditor,
            ProbeFactory(),
            budget=budget,
            timeout_s=timeout_s,
            privacy_class=privacy_class,
        )
        traffic = None
        if policy is not None and claimed is not None:
            traffic = TrafficAudits(
                auditor,
                policy,
                claimed=claimed,
                observe=lambda params: probes.factory.shapes.observe(params),
            )
        return cls(
            book=book,
            auditor=auditor,
            scorer=scorer,
            probes=probes,
            store=store,
            traffic=traffic,
            release_poll_s=release_poll_s,
        )

    @classmethod
    def for_tracker(
        cls,
        settings: Settings,
        db: AsyncEngine,
        registry: Registry,
        reputation: FailureSink | None,
        penalties: Penalties | None,
        policy: Policy,
    ) -> AuditService:
        """The tracker's audits, from its settings (see ``lichen.roles.tracker``)."""

        def claimed(peer_id: str, model: str) -> str | None:
            conn = registry.get(peer_id)
            if conn is None:
                return None
            return next((m.sha256 for m in conn.state.manifest.models if m.name == model), None)

        def installed() -> list[ReferenceModel]:
            return reference_models(settings.models_path, threads=settings.audit_threads)

        return cls.build(
            models=installed(),
            discover=installed,  # models the tracker pulls later are audited too
            nodes=lambda: list(registry),
            db=db,
            reputation=reputation,
            penalties=penalties,
            budget=settings.audit_budget,
            quarantine_after=settings.audit_quarantine_after,
            timeout_s=settings.request_timeout_s,
            privacy_class=lambda: policy.default_privacy_class,
            policy=lambda: policy,
            claimed=claimed,
            sanction=sanction_for(settings.audit_sanction, db),  # revoke, if the operator says
            release_poll_s=settings.membership_poll_s,  # releases reach it like revocations
        )

    def quarantined(self, peer_id: str) -> bool:
        return self.book.quarantined(peer_id)

    def record_of(self, peer_id: str, *, recent: int = 0) -> dict[str, Any] | None:
        """``peer_id``'s audit record as JSON (None if never audited)."""
        return audit_json(self.book.node(peer_id), recent=recent)

    def records(self, *, recent: int = 0) -> dict[str, dict[str, Any]]:
        """Every audited node's record as JSON, by peer id."""
        out: dict[str, dict[str, Any]] = {}
        for peer_id, record in sorted(self.book.snapshot().items()):
            shown = audit_json(record, recent=recent)
            if shown is not None:
                out[peer_id] = shown
        return out

    async def start(self) -> None:
        if self.store is not None:
            history, self._release_id = await self.store.history()
            self.book.load(history)
            self._releases_task = asyncio.create_task(self._watch_releases(), name="audit-releases")
        self._task = asyncio.create_task(self.probes.run(), name="audit-probes")
        names = self.scorer.model_names()
        if names:
            log.info("audits on: reference model(s) %s", ", ".join(names))
        else:
            log.info(
                "audits on, but no reference model is installed yet: nodes are audited once "
                "the tracker holds the models they serve (lichen models pull NAME)"
            )

    async def poll_releases(self) -> list[str]:
        """Apply releases stored since the last poll; returns the peers released."""
        if self.store is None:
            return []
        released: list[str] = []
        for row_id, entry in await self.store.releases_after(self._release_id):
            self.book.apply_release(entry)
            self._release_id = row_id
            released.append(entry.peer_id)
        return released

    async def _watch_releases(self) -> None:
        while True:
            await asyncio.sleep(self.release_poll_s)
            try:
                await self.poll_releases()
            except Exception as exc:  # a locked or unreachable DB must not stop the watcher
                log.warning("could not read audit releases: %s", type(exc).__name__)

    async def stop(self) -> None:
        await cancel_and_wait(self._task, self._releases_task)
        self._task = self._releases_task = None
        if self.traffic is not None:
            await self.traffic.close()
        await self.scorer.close()
