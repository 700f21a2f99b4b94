"""The admin API (/v1/admin) on SQLite and PostgreSQL: operator keys only, typed
bodies, every write in the action log, and hostile callers refused with typed errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts_kit import NETWORK_KEY, account_app, client, csrf, make_accounting, signup
from lichen.accounts.keys import ApiKeyService
from lichen.accounts.roles import AccountRoles
from lichen.errors import LichenError
from lichen.gateway.admin import mount_admin
from lichen.gateway.body_limit import BodyLimitMiddleware, BodyLimits
from lichen.gateway.services import GatewayServices
from lichen.identity.invites import parse_invite
from lichen.identity.signing import public_raw
from lichen.storage.accounts_tables import OperatorActionRow
from lichen.storage.membership import MemberRecord, MembershipRepository
from lichen.storage.tables import InviteRow
from lichen.tracker.revocations import RevocationWatcher

PUBLIC_URL = "https://tracker.example.org"


@pytest.fixture
def acc(lichen_db: AsyncEngine) -> GatewayServices:
    return make_accounting(lichen_db)


@pytest.fixture
def members(lichen_db: AsyncEngine) -> MembershipRepository:
    return MembershipRepository(lichen_db)


@pytest.fixture
def app(acc: GatewayServices, members: MembershipRepository, lichen_db: AsyncEngine) -> FastAPI:
    app = account_app(acc)  # sign-up and sessions too: cookies must not reach /v1/admin
    mount_admin(app, lichen_db, acc, members, NETWORK_KEY, public_url=PUBLIC_URL)
    app.add_middleware(BodyLimitMiddleware, limits=BodyLimits())
    return app


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app) as c:
        yield c


class Keys:
    """An operator key, the same operator's inference-only key and a plain user's key."""

    def __init__(self, acc: GatewayServices, db: AsyncEngine) -> None:
        self.acc = acc
        self.roles = AccountRoles(db)
        self.keys = ApiKeyService(db)

    async def make(self) -> Keys:
        accounts = self.acc.accounts
        self.op = await accounts.signup("opal", "opal@example.org", "a long operator password")
        self.user = await accounts.signup("usha", "usha@example.org", "a long user password")
        await self.roles.set_role(self.op.id, "operator")
        self.op_key = await self.keys.create(self.op.id, name="ops", scopes=["account"])
        self.op_inference = await self.keys.create(self.op.id, name="app", scopes=["inference"])
        self.user_key = await self.keys.create(
            self.user.id, name="all", scopes=["inference", "account"]
        )
        return self

    @property
    def operator(self) -> dict[str, str]:
        return bearer(self.op_key.secret)


@pytest.fixture
async def keys(acc: GatewayServices, lichen_db: AsyncEngine) -> Keys:
    return await Keys(acc, lichen_db).make()


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


async def actions(db: AsyncEngine) -> list[tuple[str, str, str]]:
    query = select(OperatorActionRow.action, OperatorActionRow.target, OperatorActionRow.detail)
    async with db.connect() as conn:
        return [tuple(r) for r in (await conn.execute(query.order_by(OperatorActionRow.id))).all()]


async def add_member(members: MembershipRepository, name: str, status: str) -> str:
    peer_id = f"lp-{name}{'a' * 30}"[:35]
    await members.join(
        MemberRecord(
            peer_id=peer_id,
            device_key=b"\x01" * 32,
            account_key=b"\x02" * 32,
            name=name,
            trust="community",
            status="pending" if status == "pending" else "approved",
            invite_id=None,
            first_seen_ms=1,
            last_seen_ms=1,
        ),
        now_ms=1,
    )
    return peer_id


def admin_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every /v1/admin route, from the app's own OpenAPI document."""
    return [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/v1/admin")
        for method in operations
    ]


# --- who may call -------------------------------------------------------------------------


async def test_every_admin_route_needs_an_operator_key(
    app: FastAPI, http: httpx.AsyncClient, keys: Keys, lichen_db: AsyncEngine
) -> None:
    routes = admin_routes(app)
    assert len(routes) == 8
    for method, path in routes:
        url = path.replace("{invite_id}", "abc").replace("{peer}", "lp-x")
        none = await http.request(method, url, json={})
        assert none.status_code == 401, (method, path)
        assert error(none)["code"] == "invalid_api_key"
        assert none.headers["www-authenticate"].startswith("Bearer")
        for refused in (keys.user_key, keys.op_inference):
            denied = await http.request(method, url, json={}, headers=bearer(refused.secret))
            assert denied.status_code == 403, (method, path, denied.text)
            assert error(denied)["code"] == "operator_required"
            assert error(denied)["type"] == "permission_error"
    assert await actions(lichen_db) == []  # nothing refused was recorded as done


async def test_bad_revoked_and_demoted_credentials(
    http: httpx.AsyncClient, keys: Keys, acc: GatewayServices
) -> None:
    assert (await http.get("/v1/admin/invites", headers=keys.operator)).status_code == 200
    for header in (
        "Basic b3BhbDpwdw==",  # another scheme
        "Bearer",  # no token
        "Bearer lop_not-an-account-key",  # the operator surfaces' token is not a key
        "Bearer lk-" + "x" * 40,  # shaped like a key, unknown
        "Bearer " + "k" * 5000,  # huge
    ):
        r = await http.get("/v1/admin/invites", headers={"authorization": header})
        assert r.status_code == 401 and error(r)["code"] == "invalid_api_key", header
    await keys.roles.set_role(keys.op.id, "user")  # demoted: refused at the next request
    r = await http.get("/v1/admin/invites", headers=keys.operator)
    assert r.status_code == 403 and error(r)["code"] == "operator_required"
    await keys.roles.set_role(keys.op.id, "operator")
    await keys.keys.revoke(keys.op.id, keys.op_key.key.id)
    r = await http.get("/v1/admin/invites", headers=keys.operator)
    assert r.status_code == 401 and "revoked" in error(r)["message"]
    fresh = await keys.keys.create(keys.op.id, name="ops2", scopes=["account"])
    assert (await http.get("/v1/admin/members", headers=bearer(fresh.secret))).status_code == 200
    await acc.accounts.delete(keys.op.id)  # a deleted account's keys are revoked with it
    r = await http.get("/v1/admin/members", headers=bearer(fresh.secret))
    assert r.status_code == 401


async def test_a_signed_in_operator_session_is_not_accepted(
    http: httpx.AsyncClient, acc: GatewayServices, lichen_db: AsyncEngine
) -> None:
    body = await signup(http, "olga")  # the client now holds olga's session cookie
    await AccountRoles(lichen_db).set_role(body["account"]["id"], "operator")
    for method, path in (("GET", "/v1/admin/invites"), ("POST", "/v1/admin/invites")):
        r = await http.request(method, path, json={}, headers=csrf(body))  # even with CSRF
        assert r.status_code == 401, r.text
        assert "sessions are not accepted" in error(r)["message"]
    assert await actions(lichen_db) == []


# --- invites --------------------------------------------------------------------------------


async def test_invites_create_list_revoke_and_the_log(
    http: httpx.AsyncClient, keys: Keys, lichen_db: AsyncEngine
) -> None:
    r = await http.post(
        "/v1/admin/invites", json={"max_uses": 3, "expires_s": 7200}, headers=keys.operator
    )
    assert r.status_code == 201, r.text
    created = r.json()
    invite = parse_invite(created["token"])
    assert invite.network_key == public_raw(NETWORK_KEY)  # signed by the network key
    assert invite.tracker_url == "wss://tracker.example.org/v1/node/connect"
    assert created["tracker_url"] == invite.tracker_url
    assert (invite.max_uses, invite.roles) == (3, ["node"])
    assert invite.expires_ms - invite.issued_ms == 7_200_000
    other = await http.post(
        "/v1/admin/invites",
        json={
            "max_uses": 0,
            "expires_s": None,
            "roles": ["node"],
            "tracker_url": "wss://t2:9",
            "other_tracker_urls": ["wss://t3:9"],
        },
        headers=keys.operator,
    )
    assert parse_invite(other.json()["token"]).tracker_urls() == ["wss://t2:9", "wss://t3:9"]
    assert other.json()["other_tracker_urls"] == ["wss://t3:9"]
    listed = (await http.get("/v1/admin/invites", headers=keys.operator)).json()["data"]
    by_id = {i["id"]: i for i in listed}
    assert by_id[invite.invite_id]["state"] == "active" and by_id[invite.invite_id]["uses"] == 0
    assert by_id[other.json()["invite"]["id"]]["expires_ms"] == 0  # never
    assert created["token"] not in str(listed)  # the token is shown once, never listed
    revoked = await http.post(
        f"/v1/admin/invites/{invite.invite_id[:10]}/revoke", headers=keys.operator
    )
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert revoked.json()["id"] == invite.invite_id
    log = await actions(lichen_db)
    assert [(a, t) for a, t, _d in log] == [
        ("invite.create", invite.invite_id),
        ("invite.create", other.json()["invite"]["id"]),
        ("invite.revoke", invite.invite_id),
    ]
    assert all(created["token"] not in detail for _a, _t, detail in log)
    listed_log = (await http.get("/v1/admin/actions?limit=2", headers=keys.operator)).json()
    assert [a["action"] for a in listed_log["data"]] == ["invite.revoke", "invite.create"]
    assert {a["key_id"] for a in listed_log["data"]} == {keys.op_key.key.id}
    async with lichen_db.connect() as conn:
        stored = (await conn.execute(select(InviteRow.id))).scalars().all()
    assert created["token"] not in str(stored)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_use": 3}, "max_use"),  # a typo is an error, not a default
        ({"max_uses": -1}, "max_uses"),
        ({"max_uses": 10**12}, "max_uses"),
        ({"max_uses": "3 please"}, "max_uses"),
        ({"expires_s": 0}, "expires_s"),
        ({"expires_s": 10**12}, "expires_s"),
        ({"roles": []}, "roles"),
        ({"roles": ["Node; DROP TABLE"]}, "roles.0"),
        ({"roles": ["node"] * 5}, "roles"),
        ({"tracker_url": ""}, "tracker_url"),
        ({"tracker_url": "ftp://tracker.example.org"}, "tracker_url"),
        ({"tracker_url": "x" * 5000}, "tracker_url"),
        ({"tracker_url": "wss://a:1", "other_tracker_urls": ["wss://a:1"]}, "tracker_url"),
        ({"other_tracker_urls": ["wss://a:1"] * 16}, "other_tracker_urls"),
        ({"other_tracker_urls": "wss://a:1"}, "other_tracker_urls"),
    ],
)
async def test_bad_invite_bodies_are_typed_400s(
    http: httpx.AsyncClient, keys: Keys, lichen_db: AsyncEngine, body: dict[str, Any], param: str
) -> None:
    r = await http.post("/v1/admin/invites", json=body, headers=keys.operator)
    assert r.status_code == 400, r.text
    assert error(r)["code"] == "invalid_request_error" and error(r)["param"] == param
    assert await actions(lichen_db) == []


async def test_unparseable_huge_and_unknown(
    http: httpx.AsyncClient, keys: Keys, lichen_db: AsyncEngine
) -> None:
    headers = keys.operator | {"content-type": "application/json"}
    r = await http.post("/v1/admin/invites", content=b"{not json", headers=headers)
    assert r.status_code == 400 and error(r)["code"] == "invalid_json"
    r = await http.post("/v1/admin/invites", content=b"[1, 2]", headers=headers)
    assert r.status_code == 400
    huge = b'{"roles": ["' + b"n" * 2_000_000 + b'"]}'
    r = await http.post("/v1/admin/invites", content=huge, headers=headers)
    assert r.status_code == 413 and error(r)["code"] == "request_too_large"
    r = await http.post("/v1/admin/invites/ffffffff/revoke", headers=keys.operator)
    assert r.status_code == 404 and error(r)["code"] == "not_found"
    r = await http.post("/v1/admin/invites/" + "f" * 300 + "/revoke", headers=keys.operator)
    assert r.status_code == 400
    r = await http.get("/v1/admin/actions?limit=0", headers=keys.operator)
    assert r.status_code == 400 and error(r)["param"] == "query.limit"
    assert await actions(lichen_db) == []


# --- members ----------------------------------------------------------------------------------


async def test_members_approve_and_revoke_reach_the_revocation_watcher(
    http: httpx.AsyncClient, keys: Keys, members: MembershipRepository, lichen_db: AsyncEngine
) -> None:
    pending = await add_member(members, "pendy", "pending")
    online = await add_member(members, "onny", "approved")
    dropped: list[tuple[str, str]] = []

    async def disconnect(peer_id: str, reason: LichenError) -> bool:
        dropped.append((peer_id, reason.code.value))
        return True

    watcher = RevocationWatcher(members, disconnect)
    listed = (await http.get("/v1/admin/members", headers=keys.operator)).json()["data"]
    assert {m["name"]: m["status"] for m in listed} == {"pendy": "pending", "onny": "approved"}
    assert "device_key" not in listed[0]
    r = await http.post("/v1/admin/members/pendy/approve", headers=keys.operator)  # by name
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert r.json()["peer_id"] == pending
    r = await http.post(f"/v1/admin/members/{online[:9]}/revoke", headers=keys.operator)
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    await watcher.poll_once()  # what a tracker does every membership_poll_s
    assert dropped == [(online, "identity_revoked")]
    r = await http.post("/v1/admin/members/lp-nobody/revoke", headers=keys.operator)
    assert r.status_code == 404 and error(r)["code"] == "not_found"
    r = await http.post("/v1/admin/members/lp-/revoke", headers=keys.operator)  # both match
    assert r.status_code == 400 and "ambiguous" in error(r)["message"]
    r = await http.post("/v1/admin/members/onny/delete", headers=keys.operator)
    assert r.status_code in (404, 405)
    assert [(a, t) for a, t, _ in await actions(lichen_db)] == [
        ("member.approve", pending),
        ("member.revoke", online),
    ]


# --- credits ----------------------------------------------------------------------------------


async def test_grants_by_username_or_ledger_account(
    http: httpx.AsyncClient, keys: Keys, acc: GatewayServices, lichen_db: AsyncEngine
) -> None:
    body = {"account": "usha", "amount": 2_500_000, "reason": "welcome"}
    r = await http.post("/v1/admin/credits/grants", json=body, headers=keys.operator)
    assert r.status_code == 201, r.text
    granted = r.json()
    assert granted["account"] == keys.user.ledger_account and granted["balance"] == 2_500_000
    again = {"account": keys.user.ledger_account, "amount": 1, "reason": "one more"}
    r = await http.post("/v1/admin/credits/grants", json=again, headers=keys.operator)
    assert r.status_code == 201 and r.json()["balance"] == 2_500_001
    assert r.json()["seq"] > granted["seq"]
    assert await acc.ledger.balance(keys.user.ledger_account) == 2_500_001
    assert [(a, t) for a, t, _ in await actions(lichen_db)] == [
        ("credits.grant", keys.user.ledger_account),
        ("credits.grant", keys.user.ledger_account),
    ]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"account": "usha", "amount": 0, "reason": "x"}, 400, "amount"),
        ({"account": "usha", "amount": -5, "reason": "x"}, 400, "amount"),
        ({"account": "usha", "amount": 10**16, "reason": "x"}, 400, "amount"),
        ({"account": "usha", "amount": 1.5, "reason": "x"}, 400, "amount"),
        ({"account": "usha", "amount": "1e9", "reason": "x"}, 400, "amount"),
        ({"account": "usha", "amount": 5}, 400, "reason"),
        ({"account": "usha", "amount": 5, "reason": "r" * 501}, 400, "reason"),
        ({"account": "usha", "amount": 5, "reason": "x", "mint": True}, 400, "mint"),
        ({"account": "", "amount": 5, "reason": "x"}, 400, "account"),
        ({"account": "nobody-here", "amount": 5, "reason": "x"}, 404, "account"),
        ({"account": "system:issuance", "amount": 5, "reason": "x"}, 400, None),
    ],
)
async def test_bad_grants_are_refused_and_mint_nothing(
    http: httpx.AsyncClient,
    keys: Keys,
    acc: GatewayServices,
    lichen_db: AsyncEngine,
    body: dict[str, Any],
    status: int,
    param: str | None,
) -> None:
    r = await http.post("/v1/admin/credits/grants", json=body, headers=keys.operator)
    assert r.status_code == status, r.text
    assert error(r)["param"] == param
    assert await acc.ledger.balance(keys.user.ledger_account) == 0
    async with lichen_db.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(OperatorActionRow)) == 0


# --- documentation ----------------------------------------------------------------------------


def test_openapi_documents_the_typed_bodies(app: FastAPI) -> None:
    spec = app.openapi()
    assert {"/v1/admin/invites", "/v1/admin/credits/grants"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert schemas["InviteCreate"]["additionalProperties"] is False
    assert schemas["CreditGrant"]["properties"]["amount"]["minimum"] == 1
    post = spec["paths"]["/v1/admin/invites"]["post"]
    assert "4XX" in post["responses"] and post["responses"]["201"]


# --- fuzzing ------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=10,
)
FIELDS = ["max_uses", "expires_s", "roles", "tracker_url", "other_tracker_urls", "account"]
FIELDS += ["amount", "reason"]
bodies = json_values | st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    path=st.sampled_from(["/v1/admin/invites", "/v1/admin/credits/grants"]),
    body=bodies,
)
async def test_random_bodies_get_deliberate_answers(
    http: httpx.AsyncClient, keys: Keys, path: str, body: Any
) -> None:
    r = await http.post(path, json=body, headers=keys.operator)
    assert r.status_code in (201, 400, 404), (r.status_code, r.text)
    if r.status_code != 201:
        assert set(error(r)) == {"message", "type", "param", "code"}
