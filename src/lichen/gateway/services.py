"""The gateway's stateful services, built from settings: accounts, sessions and API
keys, usage, the credit ledger, rate limits, the request guard and node reputation.

:meth:`GatewayServices.build` makes every service once; the composition root then:

- passes :attr:`GatewayServices.reputation` to the scheduler (it ranks nodes by it);
- passes :meth:`RequestGuard.settle` as the completion service's ``settle`` hook;
- calls :meth:`GatewayServices.install` on the gateway app (routes and the guard);
- runs :meth:`start` / :meth:`stop` around the process's life (reputation
  persistence, the account sweeper, the rate-limit store's connection).

The web UI uses the same services (:attr:`accounts`, :attr:`sessions`,
:attr:`keys`, :attr:`usage`) for its sign-up, sign-in and key pages.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.accounts.keys import ApiKeyService
from lichen.accounts.passwords import Passwords
from lichen.accounts.service import AccountService
from lichen.accounts.sessions import SessionService
from lichen.accounts.sweeper import AccountSweeper
from lichen.accounts.usage import UsageRepository
from lichen.clock import Clock, system_clock
from lichen.config import Settings
from lichen.gateway.account_routes import account_router
from lichen.gateway.auth_routes import auth_router
from lichen.gateway.guard import GuardPolicy, RequestGuard, install_guard
from lichen.gateway.metering import Meter, installed_model_file
from lichen.http.auth import Authenticator, address_key
from lichen.ledger.releaser import EscrowReleaser, release_interval
from lichen.ledger.service import Ledger
from lichen.ledger.tokens import TokenCounter
from lichen.ratelimit import Backend, Limits, RateLimiter, Window, limiter_for
from lichen.reputation.book import ReputationBook
from lichen.reputation.store import ReputationKeeper, ReputationStore


def guard_policy(settings: Settings) -> GuardPolicy:
    return GuardPolicy(
        allow_anonymous=settings.allow_anonymous,
        require_credits=settings.require_credits,
        key_limits=Limits(settings.key_requests_per_minute, settings.key_tokens_per_day),
        anonymous_limits=Limits(
            settings.anonymous_requests_per_minute, settings.anonymous_tokens_per_day
        ),
        limit_loopback=settings.limit_loopback,
        key_concurrency=settings.key_concurrent_requests,
        anonymous_concurrency=settings.anonymous_concurrent_requests,
        concurrency_lease_s=settings.request_timeout_s + 60,  # shared in-flight leases
    )


@dataclass
class GatewayServices:
    accounts: AccountService
    sessions: SessionService
    keys: ApiKeyService
    usage: UsageRepository
    ledger: Ledger
    limiter: RateLimiter
    authenticator: Authenticator
    guard: RequestGuard
    reputation: ReputationBook
    keeper: ReputationKeeper
    sweeper: AccountSweeper
    clock: Clock
    auth_window: Window  # sign-up / sign-in / refresh attempts per client address
    releaser: EscrowReleaser | None = None  # pays node owners when audit windows close

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: AsyncEngine,
        network_key: Ed25519PrivateKey,
        *,
        clock: Clock = system_clock,
        passwords: Passwords | None = None,
        backend: Backend | None = None,
    ) -> GatewayServices:
        accounts = AccountService(db, passwords=passwords, clock=clock)
        sessions = SessionService(db, clock=clock)
        keys = ApiKeyService(db, clock=clock)
        usage = UsageRepository(db, clock=clock)
        ledger = Ledger(
            db, network_key, clock=clock, audit_window_ms=settings.audit_window_s * 1000
        )
        limiter = limiter_for(settings, clock=clock, backend=backend)  # shared via redis_url
        authenticator = Authenticator(keys, sessions, address_key=address_key(network_key))
        reputation = ReputationBook(clock=clock)
        guard = RequestGuard(
            authenticator=authenticator,
            limiter=limiter,
            policy=guard_policy(settings),
            ledger=ledger,
            usage=usage,
            reputation=reputation,
            # Exact token counts for the models this machine has a copy of (ledger.tokens).
            meter=Meter(tokens=TokenCounter(installed_model_file(settings.models_path))),
        )
        return cls(
            accounts=accounts,
            sessions=sessions,
            keys=keys,
            usage=usage,
            ledger=ledger,
            limiter=limiter,
            authenticator=authenticator,
            guard=guard,
            reputation=reputation,
            keeper=ReputationKeeper(reputation, ReputationStore(db)),
            sweeper=AccountSweeper(accounts, sessions),
            clock=clock,
            auth_window=Window(settings.auth_attempts_per_minute, 60),
            releaser=EscrowReleaser(ledger, interval_s=release_interval(settings.audit_window_s)),
        )

    def install(self, app: FastAPI) -> None:
        """Add the ``/v1/auth`` and ``/v1/account`` routes and the inference guard (the
        completion service settles through ``guard.settle``, given at its construction)."""
        app.include_router(auth_router(self))
        app.include_router(account_router(self))
        install_guard(app, self.guard)

    async def start(self) -> None:
        await self.keeper.start()
        self.sweeper.start()
        if self.releaser is not None:
            self.releaser.start()

    async def stop(self) -> None:
        if self.releaser is not None:
            await self.releaser.stop()
        await self.sweeper.stop()
        await self.keeper.stop()
        await self.limiter.aclose()
