"""CSRF protection for the web UI's own state-changing routes (double-submit token).

Each browser gets a random token in an HttpOnly, SameSite=Strict cookie; pages
carry the same token in ``<meta name="csrf-token">`` and in hidden form fields,
and every POST must send it back (form field or ``x-csrf-token`` header). A
cross-site page can make the browser send the cookie, but cannot read the token.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from lichen.errors import ErrorCode, LichenError

COOKIE = "lichen_csrf"
HEADER = "x-csrf-token"
FIELD = "csrf_token"
_MAX_AGE_S = 7 * 24 * 3600


def token(request: Request) -> str:
    """This browser's token: the cookie's, or a new one that :func:`remember` will set."""
    current = request.cookies.get(COOKIE, "")
    if 20 <= len(current) <= 100:
        return current
    fresh: str = getattr(request.state, "csrf_new", "") or secrets.token_urlsafe(32)
    request.state.csrf_new = fresh
    return fresh


def remember(request: Request, response: Response) -> None:
    """Set the cookie when :func:`token` had to make a new token for this request."""
    fresh = getattr(request.state, "csrf_new", "")
    if fresh:
        response.set_cookie(
            COOKIE,
            fresh,
            max_age=_MAX_AGE_S,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )


def check(request: Request, submitted: str | None = None) -> None:
    """Refuse (403) a POST whose token does not match the cookie's."""
    expected = request.cookies.get(COOKIE, "")
    given = submitted if submitted is not None else request.headers.get(HEADER, "")
    if not expected or not given or not hmac.compare_digest(expected, given):
        raise LichenError(
            ErrorCode.FORBIDDEN, "missing or wrong CSRF token; reload the page and try again"
        )
