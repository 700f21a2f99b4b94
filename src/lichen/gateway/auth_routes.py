"""``/v1/auth/*``: sign up, sign in, refresh, sign out, restore a deleted account.

Browser sessions live in cookies (:mod:`lichen.http.session_cookies`); every
answer that starts or refreshes a session also returns the CSRF token, which
state-changing cookie requests must echo in ``X-CSRF-Token``. Every route here is
limited per client address (``auth_attempts_per_minute``), which bounds password
guessing and sign-up floods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from lichen.accounts.service import Account
from lichen.accounts.sessions import IssuedSession
from lichen.clock import to_ms
from lichen.errors import ErrorCode, LichenError
from lichen.http import csrf
from lichen.http.session_cookies import (
    REFRESH_COOKIE,
    SESSION_COOKIE,
    check_csrf,
    clear_session_cookies,
    set_session_cookies,
)

if TYPE_CHECKING:
    from lichen.gateway.services import GatewayServices


class SignupBody(BaseModel):
    username: str = Field(max_length=64)
    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)


class LoginBody(BaseModel):
    login: str = Field(max_length=254, description="username or email")
    password: str = Field(max_length=1024)


def session_body(account: Account | None, issued: IssuedSession, csrf_token: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "csrf_token": csrf_token,
        "expires_ms": issued.access_expires_ms,
        "refresh_expires_ms": issued.refresh_expires_ms,
    }
    if account is not None:
        body["account"] = account.public()
    return body


def auth_router(acc: GatewayServices) -> APIRouter:
    router = APIRouter(prefix="/v1/auth", tags=["auth"])

    async def limit(request: Request) -> None:
        await acc.limiter.hit(f"auth:{acc.authenticator.client_tag(request)}", acc.auth_window)

    def signed_in(
        request: Request, account: Account | None, issued: IssuedSession, status: int = 200
    ) -> JSONResponse:
        token = csrf.token(request)
        response = JSONResponse(session_body(account, issued, token), status_code=status)
        set_session_cookies(request, response, issued, token, now_ms=to_ms(acc.clock()))
        return response

    @router.post("/signup")
    async def signup(body: SignupBody, request: Request) -> JSONResponse:
        """Create an account (with no credits) and sign in."""
        await limit(request)
        account = await acc.accounts.signup(body.username, body.email, body.password)
        return signed_in(request, account, await acc.sessions.start(account.id), 201)

    @router.post("/login")
    async def login(body: LoginBody, request: Request) -> JSONResponse:
        await limit(request)
        account = await acc.accounts.authenticate(body.login, body.password)
        return signed_in(request, account, await acc.sessions.start(account.id))

    @router.post("/refresh")
    async def refresh(request: Request) -> JSONResponse:
        """Spend the refresh cookie for a new token pair (reuse revokes the session)."""
        await limit(request)
        check_csrf(request)
        token = request.cookies.get(REFRESH_COOKIE, "")
        if not token:
            raise LichenError(ErrorCode.INVALID_CREDENTIALS, "no refresh token; sign in again")
        return signed_in(request, None, await acc.sessions.refresh(token))

    @router.post("/logout")
    async def logout(request: Request) -> JSONResponse:
        access = request.cookies.get(SESSION_COOKIE, "")
        refresh = request.cookies.get(REFRESH_COOKIE, "")
        if access or refresh:
            check_csrf(request)
            await acc.sessions.end(access_token=access, refresh_token=refresh)
        response = JSONResponse({"signed_out": True})
        clear_session_cookies(request, response)
        return response

    @router.post("/restore")
    async def restore(body: LoginBody, request: Request) -> JSONResponse:
        """Undo an account deletion during its grace period, and sign in."""
        await limit(request)
        account = await acc.accounts.restore(body.login, body.password)
        return signed_in(request, account, await acc.sessions.start(account.id))

    return router
