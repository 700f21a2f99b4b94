"""The gate in front of inference: who, how much, and who pays.

:func:`guarded` is a route dependency every inference route declares (the
dialect routers add it to each route they hold, so a new route is guarded by
default): it authenticates the caller, applies rate limits and quotas, and, when
credits are enforced, refuses callers with no credits (402
``insufficient_quota``). The ``X-RateLimit-*`` headers it computes are added to
the answer by the dialect's route class. The admission :class:`Ticket` travels
with the request in a context variable for as long as the response runs, so when
the completion service records the answer, :meth:`RequestGuard.settle` can count
its tokens against the quota, settle the node's receipt in the ledger, record
the account's usage and feed reputation. Anonymous callers are never charged
(there is no one to charge).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.requests import Request

from lichen.accounts.principal import SCOPE_INFERENCE, Principal
from lichen.accounts.usage import UsageRepository
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.completions import Outcome
from lichen.gateway.concurrency import ConcurrencyLimiter
from lichen.gateway.metering import Meter
from lichen.http.auth import Authenticator
from lichen.http.requests import is_loopback_address
from lichen.ledger.pricing import format_credits
from lichen.ledger.service import Claim, Ledger
from lichen.ratelimit.limiter import Limits, Quota, RateLimiter
from lichen.reputation.book import ReputationBook

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    allow_anonymous: bool  # serve callers without a key (bounded by anonymous_limits)
    require_credits: bool  # charge signed-in callers; 402 when they have no credits
    key_limits: Limits  # per API key or signed-in account
    anonymous_limits: Limits  # per client address
    limit_loopback: bool = False  # False: this machine's own anonymous use is not limited
    key_concurrency: int = 0  # requests in flight per key or account (0 = no cap)
    anonymous_concurrency: int = 0  # requests in flight per anonymous client address
    concurrency_lease_s: float = 360.0  # a shared in-flight lease expires after this (deadline+)


@dataclass(frozen=True, slots=True)
class Ticket:
    principal: Principal
    limits: Limits
    quota: Quota
    concurrency: int = 0  # requests this principal may have in flight (0 = no cap)


UNLIMITED = Limits(0, 0)


_ticket: ContextVar[Ticket | None] = ContextVar("lichen_ticket", default=None)


def current_ticket() -> Ticket | None:
    """The admission of the request being served, if it went through the guard."""
    return _ticket.get()


class RequestGuard:
    def __init__(
        self,
        *,
        authenticator: Authenticator,
        limiter: RateLimiter,
        policy: GuardPolicy,
        ledger: Ledger | None = None,
        usage: UsageRepository | None = None,
        reputation: ReputationBook | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.limiter = limiter
        self.policy = policy
        self.ledger = ledger
        self.usage = usage
        self.reputation = reputation
        # Requests in flight per principal: in this process, and across replicas when the
        # limiter's counters are shared (Redis).
        self.concurrency = ConcurrencyLimiter(
            limiter if limiter.shared else None, lease_s=policy.concurrency_lease_s
        )
        self.meter = meter or Meter()  # what to settle: counted, bounded (lichen.gateway.metering)

    async def admit(self, request: Request) -> Ticket:
        principal = await self.authenticator.principal(
            request, placeholders=self.policy.allow_anonymous
        )
        if principal.anonymous:
            if not self.policy.allow_anonymous:
                raise LichenError(
                    ErrorCode.UNAUTHORIZED,
                    "this network serves only signed-in users: send an API key as "
                    "'Authorization: Bearer <key>'",
                )
            limits = self.policy.anonymous_limits
            concurrency = self.policy.anonymous_concurrency
            if not self.policy.limit_loopback and is_loopback_address(
                request.client.host if request.client else ""
            ):
                limits, concurrency = UNLIMITED, 0
        elif not principal.allows(SCOPE_INFERENCE):
            raise LichenError(ErrorCode.FORBIDDEN, "this API key lacks the 'inference' scope")
        else:
            limits, concurrency = self.policy.key_limits, self.policy.key_concurrency
        quota = await self.limiter.admit(principal.subject, limits)
        account = principal.ledger_account
        if self.policy.require_credits and account is not None and self.ledger is not None:
            balance = await self.ledger.balance(account)
            if balance <= 0:
                raise LichenError(
                    ErrorCode.INSUFFICIENT_CREDITS,
                    f"You have no credits left (balance {format_credits(balance)}). Requests "
                    "are charged per token by model tier; ask the network operator for "
                    "credits.",
                    headers=quota.headers(),
                )
        return Ticket(principal=principal, limits=limits, quota=quota, concurrency=concurrency)

    async def weigh(self, extra: int, why: str) -> None:
        """Charge the admitted caller ``extra`` more requests (429 if over its limit)."""
        ticket = _ticket.get()
        if ticket is not None and extra > 0:
            await self.limiter.charge(ticket.principal.subject, ticket.limits, extra, why)

    async def settle(self, outcome: Outcome) -> None:
        """Account for one answered request (called once, when it is recorded)."""
        ticket = _ticket.get()
        if ticket is None:
            return
        # Settle on what was streamed (counted, bounded), never on the node's claim alone;
        # streamed tokens count against the quota whatever the status or the client did.
        principal, usage = ticket.principal, (await self.meter.measure(outcome)).usage
        tokens = usage.prompt_tokens + usage.completion_tokens
        await self.limiter.count_tokens(principal.subject, ticket.limits, tokens)
        if outcome.status >= 400 and not outcome.receipt:
            return
        charged = 0
        account = principal.ledger_account
        if self.policy.require_credits and account and self.ledger and outcome.receipt:
            try:
                settled = await self.ledger.settle(
                    Claim(
                        receipt=outcome.receipt,
                        consumer=account,
                        peer_id=outcome.node,
                        job_id=outcome.job_id or None,
                        model=outcome.model,
                        usage=usage,
                    )
                )
                charged = settled.amount
            except LichenError as error:
                log.warning("receipt from node %s refused: %s", outcome.node, error.message)
                if self.reputation is not None and outcome.node and error.code in _NODE_FAULTS:
                    self.reputation.job_failed(outcome.node)
        if principal.account_id is not None and self.usage is not None:
            await self.usage.record(
                principal.account_id,
                model=outcome.model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                credits=charged,
            )
        if self.reputation is not None and outcome.node:
            latency = time.perf_counter() - outcome.started
            self.reputation.served(outcome.node, tokens=tokens, latency_s=latency)


_NODE_FAULTS = (ErrorCode.RECEIPT_INVALID, ErrorCode.REPLAYED, ErrorCode.AMOUNT_OUT_OF_RANGE)

GUARD_STATE = "lichen_guard"  # app.state attribute holding the gateway's RequestGuard
QUOTA_HEADERS_STATE = "lichen_quota_headers"  # request.state: X-RateLimit-* for the answer


ADMITTED_STATE = "lichen_admitted"  # request.state: admitted already (holds the Ticket)


async def guarded(request: Request) -> AsyncIterator[Ticket | None]:
    """Route dependency: admit the caller (or refuse with a LichenError) for the
    whole life of the response, streamed or not. Without a guard installed on the
    app (no accounting), every caller is admitted.

    The dialects' route class enters this same dependency before reading the body
    (so a refused caller's body is never read); the route's own declaration then
    finds the request admitted and does not admit it twice."""
    if hasattr(request.state, ADMITTED_STATE):
        yield getattr(request.state, ADMITTED_STATE)
        return
    guard: RequestGuard | None = getattr(request.app.state, GUARD_STATE, None)
    if guard is None:
        setattr(request.state, ADMITTED_STATE, None)
        yield None
        return
    ticket = await guard.admit(request)
    setattr(request.state, QUOTA_HEADERS_STATE, ticket.quota.headers())
    subject = ticket.principal.subject
    lease = await guard.concurrency.enter(subject, ticket.concurrency)  # 429 past the cap
    token = _ticket.set(ticket)
    setattr(request.state, ADMITTED_STATE, ticket)
    try:
        yield ticket
    finally:
        _ticket.reset(token)
        await guard.concurrency.leave(subject, lease)  # however the response ended


def install_guard(app: FastAPI, guard: RequestGuard) -> None:
    """Make ``guard`` the gate of every route that declares :func:`guarded`."""
    setattr(app.state, GUARD_STATE, guard)
