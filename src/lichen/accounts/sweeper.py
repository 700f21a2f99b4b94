"""The accounts sweeper: purges accounts past their grace period and expired tokens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from lichen.accounts.service import AccountService
from lichen.accounts.sessions import SessionService

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
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> SweepResult:
        purged = await self._accounts.purge_due()
        expired = await self._sessions.sweep_expired()
        return SweepResult(purged_accounts=purged, expired_tokens=expired)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="accounts-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # a failed sweep is retried next time
                log.warning("accounts sweep failed: %s", type(exc).__name__)
            await asyncio.sleep(self._interval_s)
