"""Revocations take effect at once: the tracker watches its database for them.

``lichen network revoke PEER`` (and ``approve``) run in another process and only
write the database; :class:`RevocationWatcher` notices a status change within
``poll_s``, tells admission to forget what it remembered about that member, and
disconnects a revoked node with ``IDENTITY_REVOKED`` (its jobs fail over or
resume elsewhere). Polling one indexed column keeps the CLI free of any admin API
on the tracker.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from lichen.clock import now_ms
from lichen.errors import ErrorCode, LichenError
from lichen.periodic import Periodic
from lichen.storage.membership import MembershipRepository

log = logging.getLogger(__name__)

Disconnect = Callable[[str, LichenError], Awaitable[bool]]

# Overlap between polls, so a revocation committed just as a poll ran is seen by the next.
_OVERLAP_MS = 5_000


class RevocationWatcher:
    """Disconnects connected nodes that the database says are revoked."""

    def __init__(
        self,
        members: MembershipRepository,
        disconnect: Disconnect,
        *,
        poll_s: float = 1.0,
        forget: Callable[[str], None] | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.members = members
        self.disconnect = disconnect
        self.forget = forget
        self.poll_s = poll_s
        self._clock = clock
        self._since = clock()

    async def poll_once(self) -> list[str]:
        """Disconnect nodes revoked since the last poll; return the ones that were connected."""
        started = self._clock()
        changed = await self.members.changed_since(self._since - _OVERLAP_MS)
        self._since = started
        dropped: list[str] = []
        for pid, status in changed:
            if self.forget is not None:
                self.forget(pid)
            if status != "revoked":
                continue
            error = LichenError(ErrorCode.IDENTITY_REVOKED, f"node {pid} was revoked")
            if await self.disconnect(pid, error):
                dropped.append(pid)
        return dropped

    async def run(self) -> None:
        """Poll every ``poll_s`` until cancelled; a locked or unreachable DB is retried."""
        await Periodic(
            "revocation-watcher",
            self.poll_once,
            self.poll_s,
            log=log,
            failure="could not read revocations",
            delay_first=True,
        ).run()
