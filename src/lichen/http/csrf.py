"""CSRF protection (double-submit token), one scheme for the web UI and the JSON API.

Each browser gets a random token in an HttpOnly, SameSite=Strict cookie. Pages carry
the same token in ``<meta name="csrf-token">`` and in hidden form fields; sign-in and
refresh return it in their JSON body. Every state-changing request authenticated by
a cookie must send it back (form field or ``x-csrf-token`` header). A cross-site page
can make the browser send the cookie, but cannot read the token.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import Response

from lichen.accounts.tokens import same
from lichen.errors import ErrorCode, LichenError

COOKIE = "lichen_csrf"
HEADER = "x-csrf-token"
FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_AGE_S = 7 * 24 * 3600
_MIN_CHARS, _MAX_CHARS = 20, 100


def token(request: Request) -> str:
    """This browser's token: the cookie's, or a new one that :func:`remember` will set."""
    current = request.cookies.get(COOKIE, "")
    if _MIN_CHARS <= len(current) <= _MAX_CHARS:
        return current
    fresh: str = getattr(request.state, "csrf_new", "") or secrets.token_urlsafe(32)
    request.state.csrf_new = fresh
    return fresh


def remember(request: Request, response: Response) -> None:
    """Set the cookie when :func:`token` had to make a new token for this request."""
    fresh = getattr(request.state, "csrf_new", "")
    if fresh:
        set_cookie(request, response, fresh, max_age=_MAX_AGE_S)


def set_cookie(request: Request, response: Response, value: str, *, max_age: int) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=max_age,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def check(
    request: Request,
    submitted: str | None = None,
    *,
    message: str = "missing or wrong CSRF token; reload the page and try again",
) -> None:
    """Refuse (403) a request whose token (``submitted``, else the header) is not the
    cookie's."""
    expected = request.cookies.get(COOKIE, "")
    given = submitted if submitted is not None else request.headers.get(HEADER, "")
    if not expected or not given or not same(expected, given):
        raise LichenError(ErrorCode.FORBIDDEN, message)
