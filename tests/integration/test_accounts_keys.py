"""API keys on SQLite and PostgreSQL: shown once, stored hashed, scoped, revoked at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts_kit import account_app, client, csrf, make_accounting, signup
from lichen.accounts.tokens import digest
from lichen.gateway.services import GatewayServices
from lichen.storage.accounts_tables import ApiKeyRow


@pytest.fixture
def acc(lichen_db: AsyncEngine) -> GatewayServices:
    return make_accounting(lichen_db, allow_anonymous=False)


@pytest.fixture
def app(acc: GatewayServices) -> FastAPI:
    return account_app(acc)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app) as c:
        yield c


async def _new_key(http: httpx.AsyncClient, body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = await http.post("/v1/account/keys", json=fields, headers=csrf(body))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_key_is_shown_once_and_stored_only_as_a_digest(
    acc: GatewayServices, http: httpx.AsyncClient, lichen_db: AsyncEngine
) -> None:
    body = await signup(http)
    created = await _new_key(http, body, name="laptop")
    secret = created["key"]
    assert secret.startswith("lk-") and len(secret) > 40
    assert created["prefix"] == secret[:11] + "…"
    assert created["scopes"] == ["inference"]
    listed = (await http.get("/v1/account/keys")).json()["data"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and secret not in str(listed)
    async with lichen_db.connect() as conn:
        stored = (await conn.execute(select(ApiKeyRow.key_hash, ApiKeyRow.prefix))).all()
    assert stored == [(digest(secret), secret[:11])]


async def test_a_bearer_key_authenticates_inference(app: FastAPI, http: httpx.AsyncClient) -> None:
    body = await signup(http)
    key = (await _new_key(http, body))["key"]
    async with client(app) as fresh:
        ok = await fresh.post("/v1/chat/completions", json={}, headers=_bearer(key))
        assert ok.status_code == 200, ok.text
        assert ok.json()["subject"].startswith("key:")
        for bad in (_bearer("lk-" + "x" * 43), _bearer("nonsense"), {"authorization": key}):
            refused = await fresh.post("/v1/chat/completions", json={}, headers=bad)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "invalid_api_key"
        anonymous = await fresh.post("/v1/chat/completions", json={})
        assert anonymous.status_code == 401  # this network does not allow anonymous use
    usage = (await http.get("/v1/account/usage")).json()
    assert (usage["requests"], usage["prompt_tokens"] + usage["completion_tokens"]) == (1, 10)
    assert usage["data"][0]["model"] == "smollm2-135m"


async def test_revocation_takes_effect_at_once(
    app: FastAPI, http: httpx.AsyncClient, lichen_db: AsyncEngine
) -> None:
    body = await signup(http)
    created = await _new_key(http, body, scopes=["inference", "account"])
    key = created["key"]
    async with client(app) as api:
        assert (await api.get("/v1/account", headers=_bearer(key))).status_code == 200
        assert (
            await api.post("/v1/chat/completions", json={}, headers=_bearer(key))
        ).status_code == 200
        revoked = await http.delete(f"/v1/account/keys/{created['id']}", headers=csrf(body))
        assert revoked.status_code == 200 and revoked.json()["revoked_ms"] is not None
        # The very next request, on any gateway sharing the database, is refused.
        other_gateway = make_accounting(lichen_db, allow_anonymous=False)
        refused = await api.post("/v1/chat/completions", json={}, headers=_bearer(key))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
    async with client(account_app(other_gateway)) as other:
        refused = await other.post("/v1/chat/completions", json={}, headers=_bearer(key))
        assert refused.status_code == 401


async def test_scopes_limit_what_a_key_can_do(app: FastAPI, http: httpx.AsyncClient) -> None:
    body = await signup(http)
    inference_only = (await _new_key(http, body, scopes=["inference"]))["key"]
    account_only = (await _new_key(http, body, scopes=["account"]))["key"]
    async with client(app) as api:
        assert (await api.get("/v1/account", headers=_bearer(inference_only))).status_code == 403
        chat = await api.post("/v1/chat/completions", json={}, headers=_bearer(account_only))
        assert chat.status_code == 403
        assert (await api.get("/v1/account/keys", headers=_bearer(account_only))).status_code == 200
    bad = await http.post("/v1/account/keys", json={"scopes": ["admin"]}, headers=csrf(body))
    assert bad.status_code == 400


async def test_a_key_cannot_touch_another_accounts_keys(http: httpx.AsyncClient) -> None:
    alice = await signup(http, "alice")
    alice_key = await _new_key(http, alice)
    http.cookies.clear()
    bob = await signup(http, "bob")
    response = await http.delete(f"/v1/account/keys/{alice_key['id']}", headers=csrf(bob))
    assert response.status_code == 404
    assert (await http.get("/v1/account/keys")).json()["data"] == []


async def test_keys_can_be_renamed_by_their_owner(http: httpx.AsyncClient) -> None:
    body = await signup(http)
    created = await _new_key(http, body, name="old")
    renamed = await http.patch(
        f"/v1/account/keys/{created['id']}", json={"name": "ci runner"}, headers=csrf(body)
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "ci runner"
    missing = await http.patch("/v1/account/keys/nope", json={"name": "x"}, headers=csrf(body))
    assert missing.status_code == 404
