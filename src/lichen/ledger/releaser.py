"""The escrow releaser: pays node owners once their jobs' audit windows close.

Started and stopped with the gateway's other periodic tasks
(:meth:`lichen.gateway.services.GatewayServices.start`). Several gateways may run one
each on the same database: releasing takes the ledger's write lock, and a hold is
closed exactly once (``ledger_escrow.state``), so they never pay twice. A round
with nothing due is one read, without the write lock.
"""

from __future__ import annotations

import logging

from lichen.ledger.service import Ledger
from lichen.periodic import Periodic

__all__ = ["EscrowReleaser", "release_interval"]

log = logging.getLogger(__name__)

MAX_INTERVAL_S = 30.0


def release_interval(window_s: float) -> float:
    """How often to look for due holds: a tenth of the window, 1-30 s (30 s with no
    window: only holds from an earlier, longer window can still come due)."""
    if window_s <= 0:
        return MAX_INTERVAL_S
    return max(1.0, min(MAX_INTERVAL_S, window_s / 10))


class EscrowReleaser:
    def __init__(self, ledger: Ledger, *, interval_s: float) -> None:
        self._ledger = ledger
        # A failed release is retried next time; holds stay pending meanwhile.
        self._loop = Periodic(
            "escrow-releaser",
            self._release,
            interval_s,
            log=log,
            failure="escrow release failed",
            delay_first=True,
        )

    def start(self) -> None:
        # Even with the window now 0: holds made under an earlier window still come due.
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _release(self) -> None:
        released = await self._ledger.release_due()
        if released:
            log.info("released %d escrowed micro-credits to node owners", released)
