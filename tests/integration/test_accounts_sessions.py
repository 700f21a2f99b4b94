"""Sign-up, sign-in and browser sessions on SQLite and PostgreSQL: cookie flags,
expiry on a controllable clock, refresh rotation with reuse detection, CSRF."""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookies import SimpleCookie

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts_kit import PASSWORD, account_app, client, csrf, make_accounting, signup
from lichen.clock import ManualClock
from lichen.gateway.services import GatewayServices
from lichen.http.csrf import COOKIE as CSRF_COOKIE
from lichen.http.session_cookies import REFRESH_COOKIE, SESSION_COOKIE


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def acc(lichen_db: AsyncEngine, clock: ManualClock) -> GatewayServices:
    return make_accounting(lichen_db, clock=clock)


@pytest.fixture
def app(acc: GatewayServices) -> FastAPI:
    return account_app(acc)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app) as c:
        yield c


def _cookie(http: httpx.AsyncClient, name: str) -> str:
    return next(c.value for c in http.cookies.jar if c.name == name)


def _cookies(response: httpx.Response) -> dict[str, SimpleCookie]:
    out: dict[str, SimpleCookie] = {}
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        for name in jar:
            out[name] = jar
    return out


async def test_session_cookies_are_httponly_lax_secure_on_https_and_short_lived(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "/v1/auth/signup",
        json={"username": "alice", "email": "alice@example.org", "password": PASSWORD},
    )
    assert response.status_code == 201
    cookies = _cookies(response)
    session = cookies[SESSION_COOKIE][SESSION_COOKIE]
    assert session["httponly"] is True
    assert session["secure"] is True
    assert session["samesite"] == "lax"
    assert session["max-age"] == str(15 * 60)
    refresh = cookies[REFRESH_COOKIE][REFRESH_COOKIE]
    assert refresh["httponly"] is True and refresh["secure"] is True
    assert refresh["samesite"] == "lax" and refresh["path"] == "/v1/auth"
    assert cookies[CSRF_COOKIE][CSRF_COOKIE]["samesite"] == "strict"
    body = response.json()
    assert body["csrf_token"] == cookies[CSRF_COOKIE][CSRF_COOKIE].value
    assert "password" not in response.text and "password_hash" not in response.text


async def test_cookies_are_not_secure_over_plain_http(acc: GatewayServices) -> None:
    async with client(account_app(acc), https=False) as http:
        response = await http.post(
            "/v1/auth/signup",
            json={"username": "bob", "email": "bob@example.org", "password": PASSWORD},
        )
    session = _cookies(response)[SESSION_COOKIE][SESSION_COOKIE]
    assert session["secure"] == ""
    assert session["httponly"] is True


async def test_signup_validates_and_refuses_duplicates(http: httpx.AsyncClient) -> None:
    await signup(http, "carol")
    again = await http.post(
        "/v1/auth/signup",
        json={"username": "CAROL", "email": "other@example.org", "password": PASSWORD},
    )
    assert again.status_code == 409
    for bad in (
        {"username": "x", "email": "x@example.org", "password": PASSWORD},
        {"username": "dave", "email": "not-an-email", "password": PASSWORD},
        {"username": "dave", "email": "dave@example.org", "password": "short"},
    ):
        response = await http.post("/v1/auth/signup", json=bad)
        assert response.status_code == 400, bad


async def test_login_with_username_or_email_and_wrong_password(
    acc: GatewayServices, http: httpx.AsyncClient
) -> None:
    await signup(http, "erin")
    http.cookies.clear()
    wrong = await http.post("/v1/auth/login", json={"login": "erin", "password": "nope-nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_credentials"
    for login in ("erin", "ERIN@example.org"):
        ok = await http.post("/v1/auth/login", json={"login": login, "password": PASSWORD})
        assert ok.status_code == 200, ok.text
        assert ok.json()["account"]["username"] == "erin"
    me = await http.get("/v1/account")
    assert me.status_code == 200 and me.json()["balance"] == 0  # no Sybil faucet


async def test_the_session_expires_after_fifteen_minutes(
    http: httpx.AsyncClient, clock: ManualClock
) -> None:
    await signup(http, "frank")
    assert (await http.get("/v1/account")).status_code == 200
    clock.advance(14 * 60)
    assert (await http.get("/v1/account")).status_code == 200
    clock.advance(61)
    expired = await http.get("/v1/account")
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]


async def test_refresh_rotates_and_reuse_revokes_the_family(
    app: FastAPI, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    body = await signup(http, "grace")
    old_refresh = _cookie(http, REFRESH_COOKIE)
    clock.advance(16 * 60)
    assert (await http.get("/v1/account")).status_code == 401
    refreshed = await http.post("/v1/auth/refresh", headers=csrf(body))
    assert refreshed.status_code == 200, refreshed.text
    new_refresh = _cookie(http, REFRESH_COOKIE)
    assert new_refresh != old_refresh
    assert (await http.get("/v1/account")).status_code == 200
    # A thief replays the spent refresh token: refused, and the whole family dies.
    async with client(app) as thief:
        thief.cookies.set(REFRESH_COOKIE, old_refresh, path="/v1/auth")
        thief.cookies.set(CSRF_COOKIE, body["csrf_token"])
        stolen = await thief.post("/v1/auth/refresh", headers=csrf(body))
    assert stolen.status_code == 401
    assert "already used" in stolen.json()["error"]["message"]
    assert (await http.get("/v1/account")).status_code == 401  # the owner is out too
    again = await http.post("/v1/auth/refresh", headers=csrf(body))
    assert again.status_code == 401


async def test_refresh_needs_csrf_and_expires(http: httpx.AsyncClient, clock: ManualClock) -> None:
    body = await signup(http, "heidi")
    assert (await http.post("/v1/auth/refresh")).status_code == 403
    clock.advance(31 * 86_400)
    late = await http.post("/v1/auth/refresh", headers=csrf(body))
    assert late.status_code == 401


async def test_cookie_requests_that_change_state_need_the_csrf_token(
    http: httpx.AsyncClient,
) -> None:
    body = await signup(http, "ivan")
    missing = await http.post("/v1/account/keys", json={"name": "k"})
    assert missing.status_code == 403
    assert missing.json()["error"]["code"] == "forbidden"
    wrong = await http.post(
        "/v1/account/keys", json={"name": "k"}, headers={"x-csrf-token": "x" * 40}
    )
    assert wrong.status_code == 403
    ok = await http.post("/v1/account/keys", json={"name": "k"}, headers=csrf(body))
    assert ok.status_code == 201
    assert (await http.get("/v1/account/keys")).status_code == 200  # reads need no token


async def test_logout_revokes_the_session(http: httpx.AsyncClient) -> None:
    body = await signup(http, "judy")
    token = _cookie(http, SESSION_COOKIE)
    out = await http.post("/v1/auth/logout", headers=csrf(body))
    assert out.status_code == 200
    http.cookies.set(SESSION_COOKIE, token)  # a copy of the old cookie is worthless now
    assert (await http.get("/v1/account")).status_code == 401


async def test_sign_in_attempts_are_limited_per_address(lichen_db: AsyncEngine) -> None:
    limited = make_accounting(lichen_db, auth_attempts_per_minute=3)
    async with client(account_app(limited)) as http:
        codes = [
            (
                await http.post("/v1/auth/login", json={"login": "x", "password": "y" * 8})
            ).status_code
            for _ in range(4)
        ]
    assert codes == [401, 401, 401, 429]
