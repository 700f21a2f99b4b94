"""The audit evidence table: one row per audit of a node (probe or sampled real request).

A feature module of :mod:`lichen.storage.tables` (which imports it); the migration
is ``migrations/versions/0002_audit.py`` (branch ``audit``). Rows are about nodes,
so they hold the ``node_manifest`` data class, like node reputation. Evidence is
token-level (the node's token and the reference's at the first bad position, the
scores); a row about a real request carries tokens only where the policy lets
completions be stored, otherwise they are blanked before the row is written.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from lichen.storage.tables import MODEL_NAME_MAX, PEER_ID_MAX, Base, BigIntId

AUDIT_DATA = "node_manifest"
EVIDENCE_MAX = 4000  # characters of JSON evidence per row
RELEASE_BY_MAX = 100  # characters of the releasing operator's name
RELEASE_REASON_MAX = 500  # characters of the reason given for a release


class AuditRow(Base):
    """One audit and its verdict."""

    __tablename__ = "audit_records"
    __table_args__ = (
        CheckConstraint("source IN ('probe', 'traffic')", name="source"),
        CheckConstraint(f"data_class = '{AUDIT_DATA}'", name="data_class"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    created_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    peer_id: Mapped[str] = mapped_column(String(PEER_ID_MAX), index=True)
    model: Mapped[str] = mapped_column(String(MODEL_NAME_MAX))
    source: Mapped[str] = mapped_column(String(16))  # "probe" | "traffic"
    probe_id: Mapped[str] = mapped_column(String(32))  # probe set id, "" for traffic
    passed: Mapped[bool] = mapped_column(Boolean)
    mode: Mapped[str] = mapped_column(String(16))  # "greedy" | "sampled"
    positions: Mapped[int] = mapped_column(Integer)
    max_margin: Mapped[float] = mapped_column(Float)
    z: Mapped[float] = mapped_column(Float)
    evidence: Mapped[str] = mapped_column(Text)  # JSON list of findings
    data_class: Mapped[str] = mapped_column(String(32), default=AUDIT_DATA)


class AuditReleaseRow(Base):
    """The operator lifted a node's audit quarantine (``lichen network audits PEER --release``).

    Migration ``0003_audit_release``. The audits before it stay in ``audit_records``;
    a running tracker reads new rows here within ``membership_poll_s``.
    """

    __tablename__ = "audit_releases"
    __table_args__ = (CheckConstraint(f"data_class = '{AUDIT_DATA}'", name="data_class"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    peer_id: Mapped[str] = mapped_column(String(PEER_ID_MAX), index=True)
    released_by: Mapped[str] = mapped_column(String(RELEASE_BY_MAX))  # the operator's user name
    reason: Mapped[str] = mapped_column(String(RELEASE_REASON_MAX))
    data_class: Mapped[str] = mapped_column(String(32), default=AUDIT_DATA)


AUDIT_DATA_CLASS: dict[str, str] = {
    AuditRow.__tablename__: AUDIT_DATA,
    AuditReleaseRow.__tablename__: AUDIT_DATA,
}
