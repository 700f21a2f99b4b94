"""What more happens to a node at quarantine: the operator's ``audit_sanction``.

``quarantine`` (the default) adds nothing: the node stays connected, is still
probed, and gets no jobs until the operator releases it. ``revoke`` also revokes
its membership exactly as ``lichen network revoke PEER`` does: the same status
write to the membership table, which the tracker's
:class:`~lichen.tracker.revocations.RevocationWatcher` turns into a disconnect
with ``IDENTITY_REVOKED`` within ``membership_poll_s``, and which admission refuses
on every reconnect. ``lichen network approve PEER`` undoes it (then release the
quarantine with ``lichen network audits PEER --release``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.audit.book import Sanction
from lichen.clock import now_ms
from lichen.storage.membership import MembershipRepository

log = logging.getLogger(__name__)

AuditSanction = Literal["quarantine", "revoke"]


class RevokeMembership:
    """The ``revoke`` sanction: the membership status write of ``lichen network revoke``."""

    def __init__(self, members: MembershipRepository, *, clock: Callable[[], int] = now_ms):
        self.members = members
        self._clock = clock

    async def __call__(self, peer_id: str) -> None:
        if await self.members.set_status(peer_id, "revoked", now_ms=self._clock()):
            log.warning("node %s revoked after failed audits (audit_sanction=revoke)", peer_id)
        else:
            log.warning("node %s failed its audits but is not a member: nothing to revoke", peer_id)


def sanction_for(kind: AuditSanction, db: AsyncEngine) -> Sanction | None:
    """The hook :class:`~lichen.audit.book.AuditBook` calls at quarantine (None: nothing more)."""
    if kind == "revoke":
        return RevokeMembership(MembershipRepository(db))
    return None
