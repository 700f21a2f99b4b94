"""The web UI: server-rendered pages on the gateway app (chat, network, node, privacy)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from fastapi import Depends, FastAPI
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException as StarletteHTTPException
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

    def add(
        path: str,
        endpoint: Endpoint,
        method: str = "GET",
        html: bool = True,
        operator: bool = False,
    ) -> None:
        if path in taken:
            return
        app.add_api_route(
            path,
            endpoint,
            methods=[method],
            include_in_schema=False,
            response_class=HTMLResponse if html else Response,
            dependencies=[Depends(deps.operator)] if operator and deps.operator else None,
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
    add("/ui/api/node", ui.api_node, html=False, operator=True)
    if "/static" not in taken:
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _html_not_found(app, ui)
    return ui


def wants_html(request: Request) -> bool:
    """A browser asking for a page (not an API client, and not an API path)."""
    path = request.url.path
    if path.startswith(("/v1/", "/api/", "/ui/api/", "/static/")) or path.endswith(".json"):
        return False
    return "text/html" in request.headers.get("accept", "")


def _html_not_found(app: FastAPI, ui: WebUI) -> None:
    """404s for browsers as a page with the layout; everyone else keeps the JSON error."""
    json_handler = app.exception_handlers.get(StarletteHTTPException)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404 and request.method == "GET" and wants_html(request):
            return await ui.not_found(request)
        if json_handler is None:
            return await http_exception_handler(request, exc)
        answer = json_handler(request, exc)
        return await answer if inspect.isawaitable(answer) else answer

    app.add_exception_handler(StarletteHTTPException, on_http)
