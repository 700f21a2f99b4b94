"""Account deletion (grace period, restore, purge) and data export, on SQLite and
PostgreSQL, with a controllable clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts_kit import PASSWORD, account_app, client, csrf, make_accounting, signup
from ledger_kit import NodeKeys
from lichen.accounts.sweeper import AccountSweeper
from lichen.clock import ManualClock
from lichen.gateway.services import GatewayServices
from lichen.ledger import Claim
from lichen.storage.accounts_tables import (
    AccountRow,
    AccountUsageRow,
    ApiKeyRow,
    SessionFamilyRow,
    SessionTokenRow,
)

DAY = 86_400


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


async def _rows(engine: AsyncEngine, table: Any, account_id: str) -> int:
    column = table.account_id if hasattr(table, "account_id") else table.id
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).where(column == account_id)) or 0)


async def _bearer_key(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    created = await http.post(
        "/v1/account/keys", json={"scopes": ["inference", "account"]}, headers=csrf(body)
    )
    assert created.status_code == 201
    key: str = created.json()["key"]
    return key


async def test_deletion_stops_the_account_now_and_purges_it_after_the_grace_period(
    acc: GatewayServices,
    app: FastAPI,
    http: httpx.AsyncClient,
    clock: ManualClock,
    lichen_db: AsyncEngine,
) -> None:
    body = await signup(http, "alice")
    account_id = body["account"]["id"]
    key = await _bearer_key(http, body)
    async with client(app) as api:
        chat = await api.post(
            "/v1/chat/completions", json={}, headers={"authorization": f"Bearer {key}"}
        )
        assert chat.status_code == 200
    assert await _rows(lichen_db, AccountUsageRow, account_id) == 1
    assert await _rows(lichen_db, ApiKeyRow, account_id) == 1

    wrong = await http.request(
        "DELETE", "/v1/account", json={"password": "wrong-password"}, headers=csrf(body)
    )
    assert wrong.status_code == 401
    deleted = await http.request(
        "DELETE", "/v1/account", json={"password": PASSWORD}, headers=csrf(body)
    )
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["purge_after_ms"] == int((clock() + 30 * DAY) * 1000)

    # Stopped at once: the key, the session and sign-in are refused.
    async with client(app) as api:
        refused = await api.post(
            "/v1/chat/completions", json={}, headers={"authorization": f"Bearer {key}"}
        )
        assert refused.status_code == 401
    assert (await http.get("/v1/account")).status_code == 401
    login = await http.post("/v1/auth/login", json={"login": "alice", "password": PASSWORD})
    assert login.status_code == 401 and "deletion" in login.json()["error"]["message"]

    sweeper = AccountSweeper(acc.accounts, acc.sessions)
    clock.advance(30 * DAY - 60)
    assert (await sweeper.sweep()).purged_accounts == []  # still inside the grace period
    assert await _rows(lichen_db, AccountRow, account_id) == 1
    clock.advance(61)
    assert (await sweeper.sweep()).purged_accounts == [account_id]
    for table in (AccountRow, ApiKeyRow, SessionFamilyRow, AccountUsageRow):
        assert await _rows(lichen_db, table, account_id) == 0, table
    async with lichen_db.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(SessionTokenRow)) == 0
    assert await acc.accounts.get(account_id) is None
    # The name is free again.
    http.cookies.clear()
    await signup(http, "alice")


async def test_a_deleted_account_can_be_restored_during_the_grace_period(
    acc: GatewayServices, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    body = await signup(http, "bob")
    await http.request("DELETE", "/v1/account", json={"password": PASSWORD}, headers=csrf(body))
    clock.advance(29 * DAY)
    restored = await http.post("/v1/auth/restore", json={"login": "bob", "password": PASSWORD})
    assert restored.status_code == 200, restored.text
    assert restored.json()["account"]["deleted_ms"] is None
    assert (await http.get("/v1/account")).status_code == 200
    clock.advance(2 * DAY)
    sweeper = AccountSweeper(acc.accounts, acc.sessions)
    assert (await sweeper.sweep()).purged_accounts == []


async def test_export_holds_the_accounts_data_and_nothing_of_others(
    acc: GatewayServices, app: FastAPI, http: httpx.AsyncClient
) -> None:
    bob = await signup(http, "bob")
    bob_key = await _bearer_key(http, bob)
    http.cookies.clear()
    alice = await signup(http, "alice")
    alice_key = await _bearer_key(http, alice)
    async with client(app) as api:
        for key in (alice_key, bob_key, bob_key):
            response = await api.post(
                "/v1/chat/completions", json={}, headers={"authorization": f"Bearer {key}"}
            )
            assert response.status_code == 200
    # Credits: a grant and a settlement for alice, a grant for bob.
    node = NodeKeys()
    alice_ledger = f"user:{alice['account']['id']}"
    await acc.ledger.grant(alice_ledger, 5_000, reason="welcome")
    await acc.ledger.grant(f"user:{bob['account']['id']}", 7_000, reason="welcome bob")
    await acc.ledger.settle(Claim(receipt=node.receipt(), consumer=alice_ledger))

    credits = (await http.get("/v1/account/credits")).json()
    assert credits["ledger_account"] == alice_ledger
    assert [(h["kind"], h["amount"] > 0) for h in credits["history"]] == [
        ("hold", False),  # paid into escrow until the audit window closes
        ("grant", True),
    ]
    assert credits["balance"] == 5_000 + sum(h["amount"] for h in credits["history"][:1])
    response = await http.get("/v1/account/export")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    data = response.json()
    assert data["account"]["username"] == "alice"
    assert data["account"]["email"] == "alice@example.org"
    assert [k["prefix"] for k in data["api_keys"]] == [alice_key[:11] + "…"]
    assert sum(u["requests"] for u in data["usage"]) == 1
    assert data["credits"]["balance"] < 5_000
    assert [e["kind"] for e in data["credits"]["history"]] == ["hold", "grant"]
    text = json.dumps(data)
    for foreign in ("bob", bob["account"]["id"], bob_key[:11], "welcome bob", alice_key):
        assert foreign not in text, foreign
    assert "password" not in text
