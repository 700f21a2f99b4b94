"""The web UI: server-rendered pages on the gateway app (chat, network, node, privacy)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from lichen.web.deps import WebDeps
from lichen.web.pages import WebUI
from lichen.web.templating import STATIC_DIR

__all__ = ["WebDeps", "WebUI", "install_web"]

Endpoint = Callable[[Request], Awaitable[Response]]


def install_web(app: FastAPI, deps: WebDeps) -> WebUI:
    """Register the UI's routes on ``app``; paths another feature already serves are kept."""
    ui = WebUI(deps)
    taken = {getattr(route, "path", None) for route in app.routes}

    def add(path: str, endpoint: Endpoint, method: str = "GET", html: bool = True) -> None:
        if path in taken:
            return
        app.add_api_route(
            path,
            endpoint,
            methods=[method],
            include_in_schema=False,
            response_class=HTMLResponse if html else Response,
        )

    add("/", ui.chat)
    add("/network", ui.network)
    add("/node", ui.node)
    add("/privacy", ui.privacy)
    if deps.policy.has_public_feed():
        add("/feed", ui.feed)
    if ui.accounts is not None:
        add("/login", ui.accounts.login)
        add("/signup", ui.accounts.signup)
        add("/account", ui.accounts.account)
    add("/node/telemetry", ui.set_telemetry, "POST", html=False)
    add("/ui/api/network", ui.api_network, html=False)
    add("/ui/api/node", ui.api_node, html=False)
    if "/static" not in taken:
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return ui
