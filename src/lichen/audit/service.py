"""The tracker's audit service: reference engine, verdict book, evidence store, probe loop.

:meth:`AuditService.build` wires the parts the tracker needs from what it already
has (its models dir, database, registry, reputation, the ledger's escrow);
:meth:`start` loads stored audits (so quarantine survives a restart) and starts
the probe scheduler, :meth:`stop` ends it and releases the reference engine.
The reference holds every model the tracker has installed locally; nodes serving
other models (or other weights) are simply not audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.audit.auditor import Auditor
from lichen.audit.book import AuditBook, FailureSink, NodeAudits, Penalties
from lichen.audit.probes import ProbeFactory
from lichen.audit.rescoring import LlamaScorer, ReferenceModel
from lichen.audit.scheduler import ProbeScheduler
from lichen.audit.store import AuditStore
from lichen.config import Settings
from lichen.privacy.policy import Policy
from lichen.tracker.connection import NodeConnection

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


def audit_json(record: NodeAudits | None, *, recent: int = 0) -> dict[str, Any] | None:
    """A node's audit record as JSON (``recent`` latest audits with their evidence)."""
    if record is None:
        return None
    out: dict[str, Any] = dict(record.summary())
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
    _task: asyncio.Task[None] | None = None

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
    ) -> AuditService:
        store = AuditStore(db) if db is not None else None
        book = AuditBook(
            quarantine_after=quarantine_after,
            penalties=penalties,
            reputation=reputation,
            save=store.save if store is not None else None,
        )
        scorer = LlamaScorer(models)
        auditor = Auditor(scorer, book)
        probes = ProbeScheduler(
            nodes,
            auditor,
            ProbeFactory(),
            budget=budget,
            timeout_s=timeout_s,
            privacy_class=privacy_class,
        )
        return cls(book=book, auditor=auditor, scorer=scorer, probes=probes, store=store)

    @classmethod
    def for_tracker(
        cls,
        settings: Settings,
        db: AsyncEngine,
        registry: Iterable[NodeConnection],
        reputation: FailureSink | None,
        penalties: Penalties | None,
        policy: Policy,
    ) -> AuditService:
        """The tracker's audits, from its settings (see ``lichen.roles.tracker``)."""
        return cls.build(
            models=reference_models(settings.models_path, threads=settings.audit_threads),
            nodes=lambda: list(registry),
            db=db,
            reputation=reputation,
            penalties=penalties,
            budget=settings.audit_budget,
            quarantine_after=settings.audit_quarantine_after,
            timeout_s=settings.request_timeout_s,
            privacy_class=lambda: policy.default_privacy_class,
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
            self.book.load(await self.store.load())
        self._task = asyncio.create_task(self.probes.run(), name="audit-probes")
        log.info("audits on: %d reference model(s)", len(self.scorer.model_names()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.scorer.close()
