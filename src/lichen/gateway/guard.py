"""The gate in front of inference: who, how much, and who pays.

:class:`GuardMiddleware` (ASGI) admits every inference request before its handler
runs, on every API dialect (OpenAI and Ollama): it authenticates the caller,
applies rate limits and quotas, and, when credits are enforced, refuses callers
with no credits (402 ``insufficient_quota``). It adds the ``X-RateLimit-*``
headers to the answer. The admission :class:`Ticket` travels with the request in
a context variable, so when the completion service records the answer,
:meth:`RequestGuard.settle` can count its tokens against the quota, settle the
node's receipt in the ledger, record the account's usage and feed reputation.
Anonymous callers are never charged (there is no one to charge).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lichen.accounts.principal import SCOPE_INFERENCE, Principal
from lichen.accounts.usage import UsageRepository
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.auth import Authenticator
from lichen.gateway.completions import Outcome
from lichen.gateway.errors import error_response
from lichen.ledger.pricing import format_credits
from lichen.ledger.service import Claim, Ledger
from lichen.ratelimit.limiter import Limits, Quota, RateLimiter
from lichen.reputation.book import ReputationBook

log = logging.getLogger(__name__)

INFERENCE_ROUTES = frozenset(
    {
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
        ("POST", "/api/chat"),
        ("POST", "/api/generate"),
        ("POST", "/api/embed"),
        ("POST", "/api/embeddings"),
    }
)


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    allow_anonymous: bool  # serve callers without a key (bounded by anonymous_limits)
    require_credits: bool  # charge signed-in callers; 402 when they have no credits
    key_limits: Limits  # per API key or signed-in account
    anonymous_limits: Limits  # per client address
    limit_loopback: bool = False  # False: this machine's own anonymous use is not limited


@dataclass(frozen=True, slots=True)
class Ticket:
    principal: Principal
    limits: Limits
    quota: Quota


UNLIMITED = Limits(0, 0)


def _is_loopback(request: Request) -> bool:
    host = request.client.host if request.client is not None else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    ) -> None:
        self.authenticator = authenticator
        self.limiter = limiter
        self.policy = policy
        self.ledger = ledger
        self.usage = usage
        self.reputation = reputation

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
            if not self.policy.limit_loopback and _is_loopback(request):
                limits = UNLIMITED
        elif not principal.allows(SCOPE_INFERENCE):
            raise LichenError(ErrorCode.FORBIDDEN, "this API key lacks the 'inference' scope")
        else:
            limits = self.policy.key_limits
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
        return Ticket(principal=principal, limits=limits, quota=quota)

    async def settle(self, outcome: Outcome) -> None:
        """Account for one answered request (called once, when it is recorded)."""
        ticket = _ticket.get()
        if ticket is None:
            return
        principal, usage = ticket.principal, outcome.usage
        tokens = usage.prompt_tokens + usage.completion_tokens
        await self.limiter.count_tokens(principal.subject, ticket.limits, tokens)
        if outcome.status >= 400:
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
                    )
                )
                charged = settled.amount
            except LichenError as error:
                log.warning("receipt from node %s refused: %s", outcome.node, error.message)
                if self.reputation is not None and outcome.node:
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


class GuardMiddleware:
    """Admits inference requests (ASGI); everything else passes straight through."""

    def __init__(self, app: ASGIApp, guard: RequestGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) not in INFERENCE_ROUTES:
            await self.app(scope, receive, send)
            return
        try:
            ticket = await self.guard.admit(Request(scope))
        except LichenError as error:
            await error_response(error)(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in ticket.quota.headers().items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        token = _ticket.set(ticket)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            _ticket.reset(token)
