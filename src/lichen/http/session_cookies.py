"""Session cookies and the CSRF double-submit check, for browser clients.

Cookies (all ``HttpOnly``; ``Secure`` when the request came over HTTPS):

- ``lichen_session``: the access token, ``SameSite=Lax``, 15 minutes;
- ``lichen_refresh``: the refresh token, ``SameSite=Lax``, only sent to ``/v1/auth``;
- ``lichen_csrf``: the CSRF token, ``SameSite=Strict`` (:mod:`lichen.http.csrf`, the
  one scheme of the web UI and this JSON API: one browser holds one token for both).

A state-changing request (any method but GET, HEAD, OPTIONS) authenticated by a
cookie must carry the CSRF token in the ``X-CSRF-Token`` header; a cross-site page
can make a browser send cookies but cannot read the token. The token is also
returned in the JSON body of sign-in and refresh, for clients that cannot read it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lichen.accounts.sessions import IssuedSession
from lichen.http import csrf

SESSION_COOKIE = "lichen_session"
REFRESH_COOKIE = "lichen_refresh"
REFRESH_PATH = "/v1/auth"


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookies(
    request: Request, response: Response, issued: IssuedSession, csrf_value: str, *, now_ms: int
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
    csrf.set_cookie(request, response, csrf_value, max_age=refresh_age)


def clear_session_cookies(request: Request, response: Response) -> None:
    secure = is_https(request)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="lax")
    response.delete_cookie(
        REFRESH_COOKIE, path=REFRESH_PATH, secure=secure, httponly=True, samesite="lax"
    )


def check_csrf(request: Request) -> None:
    """Refuse (403) an unsafe cookie-authenticated request without the matching token."""
    if request.method in csrf.SAFE_METHODS:
        return
    csrf.check(
        request,
        message=f"missing or wrong CSRF token: send the csrf_token from sign-in "
        f"in the {csrf.HEADER} header",
    )
