"""The web UI's account pages in-process, on the real accounts services and routes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from accounts_kit import PASSWORD, account_app, client, csrf, make_accounting, signup
from lichen.gateway.services import GatewayServices
from lichen.storage.engine import create_engine, migrate
from lichen.tracker.registry import Registry
from lichen.web import WebDeps, install_web


@pytest.fixture
async def acc(tmp_path: Path) -> AsyncIterator[GatewayServices]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'accounts.db'}"
    await migrate(url)
    engine = create_engine(url)
    try:
        yield make_accounting(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def app(acc: GatewayServices, tmp_path: Path) -> FastAPI:
    app = account_app(acc)
    install_web(app, WebDeps(registry=Registry(), data_dir=tmp_path, accounting=acc))
    return app


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app) as c:
        yield c


def nav_labels(html: str) -> list[str]:
    nav = html.split('<ul class="nav">')[1].split("</ul>")[0]
    return re.findall(r">([^<>]+)</a>", nav)


async def test_signed_out_pages_offer_log_in_and_account_redirects(
    http: httpx.AsyncClient,
) -> None:
    home = await http.get("/")
    assert nav_labels(home.text)[-2:] == ["Log in", "Sign up"]
    assert 'data-accounts="1" data-signed-in="0"' in home.text
    account = await http.get("/account")
    assert (account.status_code, account.headers["location"]) == (303, "/login?next=/account")
    login = await http.get("/login?next=/account")
    assert 'data-next="/account"' in login.text
    assert 'autocomplete="current-password"' in login.text
    signup_page = await http.get("/signup")
    assert 'autocomplete="new-password"' in signup_page.text


async def test_login_never_returns_to_another_site(http: httpx.AsyncClient) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        page = await http.get("/login", params={"next": target})
        assert 'data-next="/account"' in page.text, target


async def test_account_page_shows_the_account_keys_and_usage_never_secrets(
    http: httpx.AsyncClient,
) -> None:
    body = await signup(http, "alice")
    page = await http.get("/account?welcome=1")
    assert page.status_code == 200
    html = page.text
    assert "alice@example.org" in html and "Welcome to Lichen" in html
    assert nav_labels(html)[-1] == "Account (alice)"
    assert 'data-signed-in="1"' in html
    assert '<p class="empty" id="keys-empty">No API keys yet.</p>' in html  # shown, not hidden
    assert re.search(r'id="balance">0\.000000<', html)

    created = await http.post(
        "/v1/account/keys", json={"name": "laptop", "scopes": ["inference"]}, headers=csrf(body)
    )
    assert created.status_code == 201
    secret = created.json()["key"]
    html = (await http.get("/account")).text
    assert "laptop" in html and created.json()["prefix"] in html
    assert secret not in html  # shown once, by the API answer only
    assert 'aria-label="Revoke key laptop"' in html

    await http.post("/v1/chat/completions", json={}, headers={"authorization": f"Bearer {secret}"})
    html = (await http.get("/account")).text
    assert re.search(r'id="usage-requests">1<', html)

    assert (await http.get("/login")).headers["location"] == "/account"  # already signed in
    assert (await http.get("/signup")).headers["location"] == "/account"


async def test_a_deleted_account_is_signed_out_of_the_pages(http: httpx.AsyncClient) -> None:
    body = await signup(http, "bob")
    deleted = await http.request(
        "DELETE", "/v1/account", json={"password": PASSWORD}, headers=csrf(body)
    )
    assert deleted.status_code == 200
    assert (await http.get("/account")).status_code == 303
    page = await http.get("/login?deleted=1")
    assert "You can restore it within 30 days." in page.text
