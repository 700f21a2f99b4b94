"""HTTP routes of the privacy feature, and the disclosure header on every response.

``GET /privacy.json`` (the signed policy), the public feed's ``/feed.json`` and
``DELETE /feed/{id}``, and deletion of kept data (``DELETE /privacy/data``).

The pages ``GET /privacy`` and ``GET /feed`` have one renderer,
:class:`lichen.web.policy_pages.PolicyPages`: the web UI serves them when it is
installed first; without it (a tracker with ``gateway=False``) they are added here,
in the same layout (with the ``/static`` files it needs), linking only each other.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lichen.accounts.tokens import looks_like_api_key
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.guard import GUARD_STATE
from lichen.http.requests import bearer_token
from lichen.privacy.content import ContentRepository, subject_of
from lichen.privacy.pipeline import DELETION_TOKEN_HEADER, REQUEST_ID_HEADER
from lichen.privacy.runtime import PrivacyService
from lichen.privacy.summary import PrivacyPolicyView
from lichen.web.policy_pages import standalone_pages
from lichen.web.templating import STATIC_DIR

DISCLOSURE_HEADER = "x-lichen-data-policy"


class DisclosureMiddleware:
    """Adds ``x-lichen-data-policy`` to every HTTP response (policies with ``disclose``)."""

    def __init__(self, app: ASGIApp, value: str) -> None:
        self.app = app
        self.header = (DISCLOSURE_HEADER.encode(), value.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)


FEED_LIMIT_MAX = 100


def _feed_limit(raw: str | None) -> int:
    """``?limit=``: 1..100 (default 50); anything else is a 400, not a crash."""
    if raw is None or raw == "":
        return 50
    if not raw.isdigit() or not 1 <= int(raw) <= FEED_LIMIT_MAX:
        raise LichenError(
            ErrorCode.INVALID_REQUEST,
            f"limit must be a whole number between 1 and {FEED_LIMIT_MAX}",
            param="limit",
        )
    return int(raw)


async def _verified_subject(request: Request) -> str | None:
    """The kept-data subject of a *verified* Lichen API key, else None.

    Kept rows carry a pseudonym of the bearer value they were sent with, so an
    unverified bearer (an OpenAI client's placeholder such as ``Bearer unused``,
    shared by many anonymous users) must never select rows to delete: only a key
    the gateway's authenticator accepts does (unknown or revoked keys get 401).
    """
    secret = bearer_token(request.headers)
    guard = getattr(request.app.state, GUARD_STATE, None)
    if not secret or not looks_like_api_key(secret) or guard is None:
        return None
    principal = await guard.authenticator.principal(request)
    if principal.kind != "api_key":
        return None
    return subject_of(secret, None)


def install_privacy(app: FastAPI, service: PrivacyService) -> None:
    """Register the privacy routes (before the app starts serving)."""
    policy = service.policy
    value = policy.disclosure_header
    if value is not None:
        app.add_middleware(DisclosureMiddleware, value=value)
    taken = {getattr(route, "path", None) for route in app.routes}
    view = PrivacyPolicyView(policy, service.signed.document.decode("utf-8"))
    pages = standalone_pages(view, service.content)  # used where the web UI is not installed

    async def privacy_json(_request: Request) -> Response:
        return JSONResponse(service.signed.public_json(policy))

    def content() -> ContentRepository:
        if service.content is None:
            raise LichenError(ErrorCode.NOT_FOUND, "this gateway keeps no content")
        return service.content

    def feed_enabled() -> ContentRepository:
        if policy.public_feed == "off":
            raise LichenError(ErrorCode.NOT_FOUND, "this network has no public feed")
        return content()

    async def feed_json(request: Request) -> Response:
        limit = _feed_limit(request.query_params.get("limit"))
        posts = await feed_enabled().feed(limit)
        return JSONResponse({"object": "list", "data": [p.feed_json() for p in posts]})

    async def feed_delete(request: Request) -> Response:
        post_id = request.path_params["post_id"]
        token = request.headers.get(DELETION_TOKEN_HEADER) or request.query_params.get("token")
        if not token:
            raise LichenError(
                ErrorCode.UNAUTHORIZED, f"send the post's deletion token in {DELETION_TOKEN_HEADER}"
            )
        repo = feed_enabled()
        if await repo.get_public(post_id) is None or not await repo.delete_by_token(post_id, token):
            raise LichenError(ErrorCode.NOT_FOUND, "no such post, or the token does not match")
        return JSONResponse({"id": post_id, "deleted": True})

    async def delete_data(request: Request) -> Response:
        """Delete kept content: one exchange by its token, or everything of the caller."""
        repo = content()
        token = request.headers.get(DELETION_TOKEN_HEADER)
        request_id = request.headers.get(REQUEST_ID_HEADER) or request.query_params.get("id")
        if token and request_id:
            deleted = 1 if await repo.delete_by_token(request_id, token) else 0
            return JSONResponse({"deleted": deleted})
        subject = await _verified_subject(request)
        if subject is None:
            raise LichenError(
                ErrorCode.UNAUTHORIZED,
                "authenticate with your Lichen API key (Authorization: Bearer lk-...), or send "
                f"{REQUEST_ID_HEADER} and {DELETION_TOKEN_HEADER}",
            )
        return JSONResponse({"deleted": await repo.delete_subject(subject)})

    app.add_api_route("/privacy.json", privacy_json, methods=["GET"], include_in_schema=False)
    if "/privacy" not in taken:
        app.add_api_route(
            "/privacy",
            pages.privacy,
            methods=["GET"],
            include_in_schema=False,
            response_class=HTMLResponse,
        )
    if policy.public_feed != "off":
        if "/feed.json" not in taken:
            app.add_api_route("/feed.json", feed_json, methods=["GET"], include_in_schema=False)
        if "/feed" not in taken:
            app.add_api_route(
                "/feed",
                pages.feed,
                methods=["GET"],
                include_in_schema=False,
                response_class=HTMLResponse,
            )
        app.add_api_route(
            "/feed/{post_id}", feed_delete, methods=["DELETE"], include_in_schema=False
        )
    if service.content is not None:
        app.add_api_route("/privacy/data", delete_data, methods=["DELETE"], include_in_schema=False)
    if "/static" not in taken:  # the pages' stylesheet and script (the web UI mounts them too)
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
