"""Lifting a node's audit quarantine: ``lichen network audits PEER --release``.

The operator investigated a quarantine and found a false positive. The release is
written to the tracker's database (``audit_releases``: who, when, why) and the
audits that led to the quarantine stay as evidence; a running tracker applies it
within ``membership_poll_s`` (:meth:`lichen.audit.service.AuditService.poll_releases`),
the way ``lichen network revoke`` reaches it. The node's failures stop counting
toward the next quarantine; new failures count again from zero.

A node revoked by ``audit_sanction = "revoke"`` stays revoked: membership is the
operator's separate decision (``lichen network approve PEER``).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from lichen.audit.book import AuditBook, ReleaseEntry
from lichen.audit.store import AuditStore
from lichen.clock import now_ms
from lichen.config import Settings
from lichen.errors import ErrorCode, LichenError
from lichen.storage.audit_tables import RELEASE_BY_MAX, RELEASE_REASON_MAX
from lichen.storage.engine import create_engine, migrate
from lichen.storage.membership import MembershipRepository

PEER_MAX = 200  # characters of a peer argument worth looking up


@dataclass(frozen=True)
class ReleaseResult:
    """What a release did."""

    peer_id: str
    released_ms: int
    by: str
    reason: str
    audits: int
    failed: int
    membership: str  # the node's membership status ("" if it is not a member)

    def as_json(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "released_ms": self.released_ms,
            "by": self.by,
            "reason": self.reason,
            "audits": self.audits,
            "failed": self.failed,
            "membership": self.membership,
        }


def _clean(text: str, limit: int, what: str) -> str:
    value = text.strip()
    if len(value) > limit:
        raise LichenError(
            ErrorCode.INVALID_REQUEST, f"{what} is too long (at most {limit} characters)"
        )
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise LichenError(ErrorCode.INVALID_REQUEST, f"{what} must be one line of printable text")
    return value


def _resolve(book: AuditBook, wanted: str, named: str | None) -> str:
    """The audited peer ``wanted`` names: its id, a unique prefix of it, or (``named``)
    the peer id membership found for a node name."""
    peers = book.snapshot()
    if wanted in peers:
        return wanted
    matches = sorted(p for p in peers if p.startswith(wanted.lower()))
    if len(matches) > 1:
        shown = ", ".join(matches[:5])
        raise LichenError(ErrorCode.INVALID_REQUEST, f"peer {wanted!r} is ambiguous: {shown}")
    if matches:
        return matches[0]
    if named is not None and named in peers:
        return named
    if named is not None:
        raise LichenError(ErrorCode.NOT_FOUND, f"node {named} has no audit record")
    raise LichenError(ErrorCode.NOT_FOUND, f"no audited node matches {wanted!r}")


async def release_node(
    settings: Settings, peer: str, *, by: str, reason: str = ""
) -> ReleaseResult:
    """Release ``peer`` (id, unique prefix or node name) from audit quarantine.

    Raises ``INVALID_REQUEST`` for an empty, ambiguous or malformed argument,
    ``NOT_FOUND`` for a node with no audit record, ``CONFLICT`` for a node that is
    not quarantined.
    """
    wanted = _clean(peer, PEER_MAX, "the peer")
    if not wanted:
        raise LichenError(ErrorCode.INVALID_REQUEST, "name the node to release (peer id or prefix)")
    note = _clean(reason, RELEASE_REASON_MAX, "the reason")
    who = _clean(by, RELEASE_BY_MAX, "the operator name")[:RELEASE_BY_MAX] or "operator"
    await migrate(settings.database)
    engine = create_engine(settings.database)
    try:
        store = AuditStore(engine)
        history, _ = await store.history()
        book = AuditBook(quarantine_after=settings.audit_quarantine_after)
        book.load(history)
        members = MembershipRepository(engine)
        named: str | None = None
        if wanted not in book.snapshot():
            try:
                named = (await members.find_member(wanted)).peer_id
            except LichenError:
                named = None
        pid = _resolve(book, wanted, named)
        record = book.node(pid)
        assert record is not None  # _resolve returns audited peers only
        if not record.quarantined:
            raise LichenError(
                ErrorCode.CONFLICT,
                f"node {pid} is not quarantined ({record.audits} audits, "
                f"{record.failures} failed); nothing to release",
            )
        entry = ReleaseEntry(now_ms(), pid, by=who, reason=note)
        await store.save_release(entry)
        member = await members.member(pid)
    finally:
        await engine.dispose()
    return ReleaseResult(
        peer_id=pid,
        released_ms=entry.created_ms,
        by=who,
        reason=note,
        audits=record.audits,
        failed=record.failures,
        membership=member.status if member is not None else "",
    )
