"""Session cookies and the CSRF double-submit check, for browser clients.

Cookies (all ``HttpOnly``; ``Secure`` when the request came over HTTPS):

- ``lichen_session``: the access token, ``SameSite=Lax``, 15 minutes;
- ``lichen_refresh``: the refresh token, ``SameSite=Lax``, only sent to ``/v1/auth``;
- ``lichen_csrf``: the CSRF token, ``SameSite=Strict``. The same cookie and header
  names as the web UI's own CSRF protection (:mod:`lichen.web.csrf`), so one
  browser holds one token that works for the pages and for this JSON API.

A state-changing request (any method but GET, HEAD, OPTIONS) authenticated by a
cookie must carry the CSRF token in the ``X-CSRF-Token`` header; a cross-site page
can make a browser send cookies but cannot read the token. The token is also
returned in the JSON body of sign-in and refresh, for clients that cannot read it.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import Response

from lichen.accounts.sessions import IssuedSession
from lichen.accounts.tokens import same
from lichen.errors import ErrorCode, LichenError

SESSION_COOKIE = "lichen_session"
REFRESH_COOKIE = "lichen_refresh"
CSRF_COOKIE = "lichen_csrf"
CSRF_HEADER = "x-csrf-token"
REFRESH_PATH = "/v1/auth"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CSRF_MIN, _CSRF_MAX = 20, 100


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def csrf_token(request: Request) -> str:
    """The browser's CSRF token if it has a usable one, else a new one."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if _CSRF_MIN <= len(current) <= _CSRF_MAX:
        return current
    return secrets.token_urlsafe(32)


def set_session_cookies(
    request: Request, response: Response, issued: IssuedSession, csrf: str, *, now_ms: int
) -> None:
    """Put a fresh token pair (and the CSRF token) into the response's cookies."""
    secure = is_https(request)
    response.set_cookie(
        SESSION_COOKIE,
        issued.access_token,
        max_age=max(0, (issued.access_expires_ms - now_ms) // 1000),
        path="/",
        secure=secure,
        httponly=True,
        samesite="lax",
    )
    refresh_age = max(0, (issued.refresh_expires_ms - now_ms) // 1000)
    response.set_cookie(
        REFRESH_COOKIE,
        issued.refresh_token,
        max_age=refresh_age,
        path=REFRESH_PATH,
        secure=secure,
        httponly=True,
        samesite="lax",
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        max_age=refresh_age,
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_session_cookies(request: Request, response: Response) -> None:
    secure = is_https(request)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="lax")
    response.delete_cookie(
        REFRESH_COOKIE, path=REFRESH_PATH, secure=secure, httponly=True, samesite="lax"
    )


def check_csrf(request: Request) -> None:
    """Refuse (403) an unsafe cookie-authenticated request without the matching token."""
    if request.method in SAFE_METHODS:
        return
    expected = request.cookies.get(CSRF_COOKIE, "")
    given = request.headers.get(CSRF_HEADER, "")
    if not expected or not given or not same(expected, given):
        raise LichenError(
            ErrorCode.FORBIDDEN,
            f"missing or wrong CSRF token: send the csrf_token from sign-in "
            f"in the {CSRF_HEADER} header",
        )
