"""Persisting audits: one ``audit_records`` row per audit, loaded back at start;
one ``audit_releases`` row per release from quarantine (written by the operator's CLI,
read by a running tracker as it polls).

Rows are written through the policy-guarded engine like every other table; a
policy that does not store the ``node_manifest`` class refuses the write, and the
audit then lives in memory only (logged once, never fatal).
"""

from __future__ import annotations

import json
import logging

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.audit.book import AuditEntry, ReleaseEntry
from lichen.audit.verifier import Finding
from lichen.errors import LichenError
from lichen.storage.audit_tables import AUDIT_DATA, EVIDENCE_MAX, AuditReleaseRow, AuditRow

log = logging.getLogger(__name__)

LOAD_LIMIT = 10_000  # most recent audits read back at start


def evidence_json(findings: tuple[Finding, ...]) -> str:
    items = [
        {
            "kind": f.kind,
            "detail": f.detail,
            "position": f.position,
            "claimed": f.claimed,
            "reference": f.reference,
            "score": f.score,
        }
        for f in findings
    ]
    text = json.dumps(items, ensure_ascii=False)
    while len(text) > EVIDENCE_MAX and items:
        items.pop()
        text = json.dumps(items, ensure_ascii=False)
    return text


def findings_from(text: str) -> tuple[Finding, ...]:
    try:
        items = json.loads(text)
    except ValueError:
        return ()
    out: list[Finding] = []
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict):
            out.append(
                Finding(
                    kind=str(item.get("kind", "")),
                    detail=str(item.get("detail", "")),
                    position=int(item.get("position", -1)),
                    claimed=str(item.get("claimed", "")),
                    reference=str(item.get("reference", "")),
                    score=float(item.get("score", 0.0)),
                )
            )
    return tuple(out)


class AuditStore:
    """Reads and writes ``audit_records``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._refused = False

    async def save(self, entry: AuditEntry) -> None:
        values = {
            "created_ms": entry.created_ms,
            "peer_id": entry.peer_id,
            "model": entry.model,
            "source": entry.source,
            "probe_id": entry.probe_id,
            "passed": entry.passed,
            "mode": entry.mode,
            "positions": entry.positions,
            "max_margin": entry.max_margin,
            "z": entry.z,
            "evidence": evidence_json(entry.findings),
            "data_class": AUDIT_DATA,
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(AuditRow).values(**values))
        except LichenError as error:  # the policy does not store this class
            if not self._refused:
                log.warning("audit evidence not stored: %s", error.message)
                self._refused = True

    async def load(self, limit: int = LOAD_LIMIT) -> list[AuditEntry]:
        """The most recent audits, oldest first."""
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AuditEntry(
                created_ms=row.created_ms,
                peer_id=row.peer_id,
                model=row.model,
                source=row.source,
                probe_id=row.probe_id,
                passed=bool(row.passed),
                mode=row.mode,
                positions=row.positions,
                max_margin=row.max_margin,
                z=row.z,
                findings=findings_from(row.evidence),
            )
            for row in reversed(rows)
        ]

    async def save_release(self, entry: ReleaseEntry) -> None:
        """Store a release (raises the policy's error if it does not store this class:
        the operator must know the release did not happen)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(AuditReleaseRow).values(
                    created_ms=entry.created_ms,
                    peer_id=entry.peer_id,
                    released_by=entry.by,
                    reason=entry.reason,
                    data_class=AUDIT_DATA,
                )
            )

    async def releases_after(self, after_id: int = 0) -> list[tuple[int, ReleaseEntry]]:
        """Releases stored after row ``after_id`` as (row id, release), oldest first."""
        query = (
            select(AuditReleaseRow)
            .where(AuditReleaseRow.id > after_id)
            .order_by(AuditReleaseRow.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            (row.id, ReleaseEntry(row.created_ms, row.peer_id, row.released_by, row.reason))
            for row in rows
        ]

    async def history(self) -> tuple[list[AuditEntry | ReleaseEntry], int]:
        """Recent audits and every release, in time order, and the last release's row id
        (a tracker polls for releases after it)."""
        audits = await self.load()
        releases = await self.releases_after(0)
        merged: list[AuditEntry | ReleaseEntry] = [*audits, *(r for _, r in releases)]
        # Stable: an audit and a release in the same millisecond keep audits first.
        merged.sort(key=lambda e: (e.created_ms, isinstance(e, ReleaseEntry)))
        return merged, releases[-1][0] if releases else 0
