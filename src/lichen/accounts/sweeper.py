"""The accounts sweeper: purges accounts past their grace period and expired tokens."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lichen.accounts.service import AccountService
from lichen.accounts.sessions import SessionService
from lichen.periodic import Periodic

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 3600.0


@dataclass(frozen=True, slots=True)
class SweepResult:
    purged_accounts: list[str]
    expired_tokens: int


class AccountSweeper:
    """Runs :meth:`sweep` now and then; the services' clocks decide what is due."""

    def __init__(
        self,
        accounts: AccountService,
        sessions: SessionService,
        *,
        interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self._accounts = accounts
        self._sessions = sessions
        self._loop = Periodic(
            "accounts-sweeper", self.sweep, interval_s, log=log, failure="accounts sweep failed"
        )

    async def sweep(self) -> SweepResult:
        purged = await self._accounts.purge_due()
        expired = await self._sessions.sweep_expired()
        return SweepResult(purged_accounts=purged, expired_tokens=expired)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
