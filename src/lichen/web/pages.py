"""The web UI's pages and the small JSON endpoints their scripts poll.

Routes are methods of :class:`WebUI`; :func:`lichen.web.install_web` registers
them on the gateway app. Each page renders complete HTML on the server, and its
script (``static/*.js``) only adds the live parts.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from lichen.errors import ErrorCode, LichenError
from lichen.gateway.origin import is_local_request
from lichen.http import csrf
from lichen.identity.trust import TrustLevel
from lichen.privacy.document import PrivacyClass
from lichen.web.account_pages import AccountPages, User
from lichen.web.deps import WebDeps
from lichen.web.forms import checked, read_fields
from lichen.web.network_view import HISTORY_MINUTES, models, snapshot
from lichen.web.node_view import node_info
from lichen.web.policy_pages import PolicyPages
from lichen.web.policy_view import PolicyView
from lichen.web.templating import SECURITY_HEADERS, NavItem, Renderer

AUTO_MODEL = "auto"
TELEMETRY_HELP = "Off by default. The privacy page says what telemetry contains."


def telemetry_help(policy: PolicyView) -> str:
    """What the network's policy says about telemetry, or a neutral line."""
    document = policy.document()
    for section in document.sections if document is not None else []:
        if section.heading.lower() == "telemetry":
            return " ".join([*section.paragraphs, *section.items]) or TELEMETRY_HELP
    return TELEMETRY_HELP


# Trust levels in the words of someone who has never run a node.
TRUST_WORDS: dict[str, str] = {
    TrustLevel.OWNER: "the network operator's own computers",
    TrustLevel.TRUSTED: "computers the operator vouches for",
    TrustLevel.COMMUNITY: "volunteers' computers that joined the network",
}


def plain_privacy_choice(description: str) -> str:
    """``"served by owner and trusted nodes"`` in plain words (others are kept as they are)."""
    prefix, suffix = "served by ", " nodes"
    if not (description.startswith(prefix) and description.endswith(suffix)):
        return description
    levels = description[len(prefix) : -len(suffix)].replace(" and ", ", ").split(", ")
    if not levels or any(level not in TRUST_WORDS for level in levels):
        return description
    words = [TRUST_WORDS[level] for level in levels]
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    return f"Only {listed} may answer."


def privacy_choices(classes: list[PrivacyClass]) -> list[dict[str, str]]:
    """The chat's privacy selector: the network's default first, each explained in place."""
    choices = [
        {
            "value": "",
            "label": "network default",
            "plain": "The network's usual rule for who may answer (the privacy page names it).",
        }
    ]
    for c in classes:
        choices.append(
            {"value": c.value, "label": c.label, "plain": plain_privacy_choice(c.description)}
        )
    return choices


def readable_credits(text: str) -> str:
    """``"0.000000"`` -> ``"0"``, ``"12.500000"`` -> ``"12.5"``: the ledger's exact six
    decimals without the zeros that say nothing (``"0.000123"`` stays as it is)."""
    if "." not in text:
        return text
    tidy = text.rstrip("0").rstrip(".")
    return "0" if tidy in ("", "-", "-0") else tidy


def _json(data: dict[str, Any], status_code: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status_code, headers=dict(SECURITY_HEADERS))


class WebUI:
    def __init__(self, deps: WebDeps, renderer: Renderer | None = None) -> None:
        self.deps = deps
        self.renderer = renderer or Renderer()
        self.accounts = AccountPages(deps.accounting, self) if deps.accounting else None
        self.policy_pages = PolicyPages(deps.policy, deps.feed, self.page)  # /privacy, /feed

    def nav(self, user: User | None) -> list[NavItem]:
        items = [
            NavItem("chat", "Chat", "/"),
            NavItem("network", "Network", "/network"),
            NavItem("node", "Node", "/node"),
            NavItem("privacy", "Privacy", "/privacy"),
        ]
        if self.deps.policy.has_public_feed():
            items.append(NavItem("feed", "Public feed", "/feed"))
        if user is not None:
            items.append(NavItem("account", f"Account ({user.label})", "/account"))
        elif self.accounts is not None:
            items.append(NavItem("login", "Log in", "/login"))
            items.append(NavItem("signup", "Sign up", "/signup"))
        return items

    async def page(
        self,
        request: Request,
        template: str,
        *,
        page: str,
        title: str,
        user: User | None = None,
        **ctx: Any,
    ) -> Response:
        """Render ``template`` in the layout, for the signed-in user if there is one."""
        if user is None and self.accounts is not None:
            user = await self.accounts.current(request)
        return self.renderer.render(
            request,
            template,
            page=page,
            title=title,
            nav=self.nav(user),
            user=user,
            accounts_enabled=self.accounts is not None,
            disclosure=self.deps.policy.disclosure(),
            **ctx,
        )

    # --- pages ------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        policy = self.deps.policy
        return await self.page(
            request,
            "chat.html",
            page="chat",
            title="Chat",
            auto_model=AUTO_MODEL,
            models=models(self.deps.registry),
            policy_summary=policy.summary(),
            privacy_classes=policy.classes(),
            privacy_choices=privacy_choices(policy.classes()),
            public_feed=policy.has_public_feed(),
        )

    async def network(self, request: Request) -> Response:
        data = await snapshot(
            self.deps.registry, self.deps.requests, self.deps.reputation, self.deps.audits
        )
        return await self.page(
            request,
            "network.html",
            page="network",
            title="Network",
            net=data,
            history_minutes=HISTORY_MINUTES,
        )

    async def node(self, request: Request) -> Response:
        return await self.page(
            request,
            "node.html",
            page="node",
            title="Node",
            node=await self._node_info(),
            operator=is_local_request(request),
            telemetry_help=telemetry_help(self.deps.policy),
            telemetry_override=self.deps.telemetry_override,
            saved=request.query_params.get("saved") == "1",
        )

    async def privacy(self, request: Request) -> Response:
        return await self.policy_pages.privacy(request)

    async def feed(self, request: Request) -> Response:
        return await self.policy_pages.feed(request)

    async def not_found(self, request: Request) -> Response:
        """The HTML 404 a browser gets for an unknown page (API clients keep JSON)."""
        path = request.url.path
        return await self.page(
            request,
            "not_found.html",
            page="not-found",
            title="Page not found",
            path=path if len(path) <= 200 else path[:197] + "...",
            status_code=404,
        )

    # --- JSON for the pages' scripts --------------------------------------------------

    async def api_network(self, request: Request) -> Response:
        return _json(
            await snapshot(
                self.deps.registry, self.deps.requests, self.deps.reputation, self.deps.audits
            )
        )

    async def _node_info(self) -> dict[str, Any] | None:
        info = await node_info(self.deps)
        conn = self.deps.registry.get(info["peer_id"]) if info is not None else None
        if info is not None and conn is not None and self.accounts is not None:
            earned = await self.accounts.owner_credits(conn.peer.certificate.account_key)
            info["credits"] = readable_credits(earned)
        return info

    async def api_node(self, request: Request) -> Response:
        info = await self._node_info()
        if info is None:
            raise LichenError(ErrorCode.NOT_FOUND, "this gateway runs no node")
        return _json(info)

    # --- settings ---------------------------------------------------------------------

    async def set_telemetry(self, request: Request) -> Response:
        """Form post (redirects back) or JSON fetch (answers JSON) from the node page."""
        fields = await read_fields(request)
        csrf.check(request, fields.get(csrf.FIELD) or request.headers.get(csrf.HEADER))
        if not is_local_request(request):
            raise LichenError(
                ErrorCode.FORBIDDEN, "node settings can only be changed from the node's machine"
            )
        if self.deps.telemetry_override is not None:
            raise LichenError(
                ErrorCode.FORBIDDEN, "LICHEN_TELEMETRY is set for this node and takes precedence"
            )
        enabled = checked(fields, "telemetry")
        self.deps.telemetry_setting.set_enabled(enabled)
        if request.headers.get("accept", "").startswith("application/json"):
            return _json({"telemetry": self.deps.telemetry_setting.enabled()})
        return RedirectResponse(f"/node?saved=1&t={int(time.time())}", status_code=303)
