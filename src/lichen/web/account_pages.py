"""Sign-up, log-in and account pages, rendered from the accounts services.

The pages only read: they find the browser's session the same way the API does
(the ``lichen_session`` cookie), and show the account, its keys, usage and
credits. Every change (sign up, log in, keys, export, deletion) is made by the
page's script through the ``/v1/auth`` and ``/v1/account`` JSON routes, so the
rules (rate limits, CSRF, password checks) live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from lichen.accounts.passwords import PASSWORD_MIN
from lichen.accounts.principal import SCOPE_ACCOUNT, SCOPE_INFERENCE
from lichen.accounts.service import DELETION_GRACE_S, Account
from lichen.http.session_cookies import SESSION_COOKIE
from lichen.ledger.names import owner_account
from lichen.ledger.pricing import format_credits

if TYPE_CHECKING:
    from lichen.gateway.services import GatewayServices
    from lichen.web.pages import WebUI

USAGE_DAYS = 30


@dataclass(frozen=True)
class ScopeChoice:
    value: str
    label: str
    default: bool


SCOPE_CHOICES = (
    ScopeChoice(SCOPE_INFERENCE, "inference (chat and completions)", True),
    ScopeChoice(SCOPE_ACCOUNT, "account (keys, usage, export)", False),
)


@dataclass(frozen=True)
class User:
    """The signed-in person, as the layout shows them."""

    account: Account

    @property
    def label(self) -> str:
        return self.account.username


def safe_next(value: str | None) -> str:
    """A local path to return to after logging in (never another site)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/account"


class AccountPages:
    def __init__(self, accounting: GatewayServices, ui: WebUI) -> None:
        self.acc = accounting
        self.ui = ui

    async def current(self, request: Request) -> User | None:
        """The account of the browser's live session, if any."""
        token = request.cookies.get(SESSION_COOKIE, "")
        if not token:
            return None
        info = await self.acc.sessions.resolve(token)
        if info is None:
            return None
        account = await self.acc.accounts.get(info.account_id)
        return User(account) if account is not None and account.active else None

    async def login(self, request: Request) -> Response:
        if await self.current(request) is not None:
            return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
        notice = ""
        if request.query_params.get("deleted"):
            days = DELETION_GRACE_S // 86_400
            notice = f"Your account was deleted. You can restore it within {days} days."
        elif request.query_params.get("signed_out"):
            notice = "You are logged out."
        return await self.ui.page(
            request,
            "login.html",
            page="login",
            title="Log in",
            next=safe_next(request.query_params.get("next")),
            notice=notice,
        )

    async def signup(self, request: Request) -> Response:
        if await self.current(request) is not None:
            return RedirectResponse("/account", status_code=303)
        return await self.ui.page(
            request,
            "signup.html",
            page="signup",
            title="Sign up",
            password_min=PASSWORD_MIN,
            policy_summary=self.ui.deps.policy.summary(),
        )

    async def account(self, request: Request) -> Response:
        user = await self.current(request)
        if user is None:
            return RedirectResponse("/login?next=/account", status_code=303)
        account = user.account
        balance = await self.acc.ledger.balance(account.ledger_account)
        usage = await self.acc.usage.daily(account.id, days=USAGE_DAYS)
        keys = await self.acc.keys.all_for(account.id)
        totals = {
            "requests": sum(r.requests for r in usage),
            "prompt_tokens": sum(r.prompt_tokens for r in usage),
            "completion_tokens": sum(r.completion_tokens for r in usage),
            "credits": format_credits(sum(r.credits for r in usage)),
        }
        return await self.ui.page(
            request,
            "account.html",
            page="account",
            title="Account",
            user=user,
            account=account,
            balance_credits=format_credits(balance),
            usage=[r.public() | {"credits": format_credits(r.credits)} for r in usage],
            usage_days=USAGE_DAYS,
            totals=totals,
            keys=[k.public() for k in keys],
            scopes=SCOPE_CHOICES,
            api_base=f"{request.base_url}v1",
            grace_days=DELETION_GRACE_S // 86_400,
            welcome=request.query_params.get("welcome") == "1",
        )

    async def owner_credits(self, account_key: bytes) -> str:
        """What the owner of ``account_key`` (a node's account) has earned, as credits."""
        return format_credits(await self.acc.ledger.balance(owner_account(account_key)))
