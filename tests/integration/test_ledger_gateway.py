"""Credits end to end, on SQLite and PostgreSQL: a real tracker and gateway on loopback,
nodes joining over the wire protocol and signing receipts, the gateway settling them."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import ANSWER, MODEL, FakeEngine, eventually, sse_payloads
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts_kit import PASSWORD
from hostile_node import HostileNode, Script, model_info
from ledger_kit import write_vocab_gguf
from lichen.accounts.passwords import fast_passwords
from lichen.config import Settings
from lichen.gateway.services import GatewayServices
from lichen.identity.signing import generate_key
from lichen.identity.store import KEYS_DIR, Identity, load_identity
from lichen.ledger import ISSUANCE, cost, owner_account
from lichen.ledger.charge import tolerance
from lichen.ledger.receipts import ReceiptSigner
from lichen.ledger.tokens import TokenCounter
from lichen.ledger.verify import verify_ledger
from lichen.node.agent import NodeAgent, NodeConfig
from lichen.roles.gateway import GatewayOptions, build_gateway
from lichen.server import HttpServer
from lichen.storage.ledger_tables import LedgerJournalRow, LedgerReceiptRow
from lichen.tracker.admission import OwnerAdmission
from lichen.tracker.service import NODE_PATH, TrackerService
from lichen.wire.messages import Usage

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Network:
    root: Path
    db: AsyncEngine
    settings: Settings
    agents: list[tuple[NodeAgent, asyncio.Task[None]]] = field(default_factory=list)

    async def start(self) -> Network:
        self.identity = load_identity(self.root / "tracker")
        self.tracker = TrackerService(
            network_key=self.identity.network_key,
            admission=OwnerAdmission(self.identity.account_public),
        )
        self.acc = GatewayServices.build(
            self.settings, self.db, self.identity.network_key, passwords=fast_passwords()
        )
        self.app = app = build_gateway(  # the gateway role's builder
            GatewayOptions(max_request_bytes=65536, timeout_s=30),
            registry=self.tracker.registry,
            reputation=self.acc.reputation,
            accounting=self.acc,
        ).app
        app.add_api_websocket_route(NODE_PATH, self.tracker.endpoint)
        await self.tracker.start()
        await self.acc.start()
        self.http = HttpServer(app, host="127.0.0.1", port=0)
        self.port = await self.http.start()
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        return self

    async def add_node(self, name: str) -> Identity:
        node_dir = self.root / name
        (node_dir / KEYS_DIR).mkdir(parents=True, mode=0o700)
        shutil.copy2(
            self.root / "tracker" / KEYS_DIR / "account.key", node_dir / KEYS_DIR / "account.key"
        )
        identity = load_identity(node_dir, node_name=name)
        agent = NodeAgent(
            identity,
            FakeEngine(prompt_tokens=5),
            NodeConfig(
                tracker_url=f"ws://127.0.0.1:{self.port}{NODE_PATH}",
                name=name,
                network_key=self.identity.network_public,
                backoff_initial_s=0.05,
            ),
        )
        self.agents.append((agent, asyncio.create_task(agent.run())))
        await eventually(lambda: self.tracker.registry.get(identity.peer_id) is not None)
        return identity

    @property
    def owner(self) -> str:
        return owner_account(self.identity.account_public)

    async def close(self) -> None:
        await self.client.aclose()
        for agent, _ in self.agents:
            await agent.stop()
        await asyncio.gather(*(task for _, task in self.agents), return_exceptions=True)
        await self.tracker.stop()
        await self.http.stop()
        await self.acc.stop()


@pytest.fixture
async def ledger_gateway(lichen_db: AsyncEngine, tmp_path: Path) -> AsyncIterator[Network]:
    network = await Network(tmp_path, lichen_db, Settings(require_credits=True)).start()
    try:
        yield network
    finally:
        await network.close()


async def _user_with_key(
    ledger_gateway: Network, name: str = "alice"
) -> tuple[str, dict[str, str]]:
    """(ledger account, auth header) of a new user with an API key."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ledger_gateway.app), base_url="https://gw"
    ) as browser:
        body = (
            await browser.post(
                "/v1/auth/signup",
                json={"username": name, "email": f"{name}@example.org", "password": PASSWORD},
            )
        ).json()
        created = await browser.post(
            "/v1/account/keys", json={}, headers={"x-csrf-token": body["csrf_token"]}
        )
    return f"user:{body['account']['id']}", {"authorization": f"Bearer {created.json()['key']}"}


def _after_window(ledger_gateway: Network) -> int:
    return int(time.time() * 1000) + ledger_gateway.settings.audit_window_s * 1000 + 1


async def _count(db: AsyncEngine, table: Any) -> int:
    async with db.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


async def test_no_credits_means_402_with_a_clear_message(ledger_gateway: Network) -> None:
    await ledger_gateway.add_node("n1")
    _, auth = await _user_with_key(ledger_gateway)
    response = await ledger_gateway.client.post("/v1/chat/completions", json=CHAT, headers=auth)
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    assert "no credits" in error["message"]
    assert "x-ratelimit-limit" in response.headers


async def test_answers_are_paid_from_the_consumer_to_the_nodes_owner(
    ledger_gateway: Network,
) -> None:
    node = await ledger_gateway.add_node("n1")
    account, auth = await _user_with_key(ledger_gateway)
    await ledger_gateway.acc.ledger.grant(account, 1_000_000, reason="test")
    response = await ledger_gateway.client.post("/v1/chat/completions", json=CHAT, headers=auth)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert int(response.headers["x-ratelimit-remaining"]) >= 0
    price = cost(MODEL, Usage(usage["prompt_tokens"], usage["completion_tokens"]))
    assert price > 0
    assert await ledger_gateway.acc.ledger.balance(account) == 1_000_000 - price
    # Paid into escrow: pending until the audit window closes.
    assert await ledger_gateway.acc.ledger.balance(ledger_gateway.owner) == 0
    assert await ledger_gateway.acc.ledger.pending(ledger_gateway.owner) == price
    assert await ledger_gateway.acc.ledger.circulating() == 1_000_000
    async with ledger_gateway.db.connect() as conn:
        row = (await conn.execute(select(LedgerReceiptRow))).one()
    assert row.node_peer_id == node.peer_id and row.consumer == account

    streamed = await ledger_gateway.client.post(
        "/v1/chat/completions", json=CHAT | {"stream": True}, headers=auth
    )
    assert streamed.status_code == 200
    assert sse_payloads(streamed.text)
    assert await ledger_gateway.acc.ledger.pending(ledger_gateway.owner) == 2 * price
    assert await ledger_gateway.acc.ledger.release_due(_after_window(ledger_gateway)) == 2 * price
    assert await ledger_gateway.acc.ledger.balance(ledger_gateway.owner) == 2 * price
    report = await verify_ledger(ledger_gateway.db, [ledger_gateway.identity.network_public])
    assert report.ok and report.receipts == 2
    record = ledger_gateway.acc.reputation.get(node.peer_id)
    assert record is not None and record.volume > 0 and record.jobs == 2


async def test_anonymous_use_is_free_and_writes_nothing_to_the_ledger(
    ledger_gateway: Network,
) -> None:
    await ledger_gateway.add_node("n1")
    response = await ledger_gateway.client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert await _count(ledger_gateway.db, LedgerJournalRow) == 0
    assert await ledger_gateway.acc.ledger.balance(ledger_gateway.owner) == 0


async def test_a_bad_key_is_refused_and_a_placeholder_is_anonymous(ledger_gateway: Network) -> None:
    await ledger_gateway.add_node("n1")
    response = await ledger_gateway.client.post(
        "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer lk-" + "0" * 43}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    # OpenAI clients must send some key: a placeholder is anonymous use, where allowed.
    placeholder = await ledger_gateway.client.post(
        "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer unused"}
    )
    assert placeholder.status_code == 200


async def test_a_node_that_forges_receipts_is_not_paid(ledger_gateway: Network) -> None:
    node = await ledger_gateway.add_node("n1")
    agent = ledger_gateway.agents[0][0]
    forger = ReceiptSigner(generate_key(), node.device_certificate)  # not its device key
    forger.session = "forged"
    agent.runner.receipts = forger
    account, auth = await _user_with_key(ledger_gateway)
    await ledger_gateway.acc.ledger.grant(account, 1_000_000, reason="test")
    before = ledger_gateway.acc.reputation.score(node.peer_id)
    response = await ledger_gateway.client.post("/v1/chat/completions", json=CHAT, headers=auth)
    assert response.status_code == 200  # the user still gets the answer
    assert await ledger_gateway.acc.ledger.balance(account) == 1_000_000  # and is not charged
    assert await ledger_gateway.acc.ledger.balance(ledger_gateway.owner) == 0
    assert await _count(ledger_gateway.db, LedgerReceiptRow) == 0
    assert ledger_gateway.acc.reputation.score(node.peer_id) < before
    assert await ledger_gateway.acc.ledger.balance(ISSUANCE) == -1_000_000


# --- honest accounting against lying nodes (issues 10 and 11) ---------------------------


async def _hostile(ledger_gateway: Network, script: Script, *, context: int = 0) -> HostileNode:
    node = HostileNode(
        ledger_gateway.root / "evil",
        owner_dir=ledger_gateway.root / "tracker",
        url=f"ws://127.0.0.1:{ledger_gateway.port}{NODE_PATH}",
        network_public=ledger_gateway.identity.network_public,
        models=[model_info(context=context)],
        script=script,
    )
    await node.connect()
    await eventually(lambda: ledger_gateway.tracker.registry.get(node.peer_id) is not None)
    return node


def _count_with_tiny_vocab(ledger_gateway: Network) -> None:
    """The gateway holds a tokenizer for MODEL: "Hello" "," " world" "." are 4 tokens."""
    vocab = write_vocab_gguf(ledger_gateway.root / "vocab.gguf", ["Hello", " world"])
    ledger_gateway.acc.guard.meter.tokens = TokenCounter({MODEL: vocab}.get)


async def test_an_inflated_receipt_is_charged_only_what_was_streamed(
    ledger_gateway: Network, caplog: pytest.LogCaptureFixture
) -> None:
    _count_with_tiny_vocab(ledger_gateway)
    inflated = Usage(5, 2_000_000_000)  # signed; the wire's largest count is 2**31 - 1
    node = await _hostile(ledger_gateway, Script(receipt_usage=inflated))
    try:
        account, auth = await _user_with_key(ledger_gateway)
        await ledger_gateway.acc.ledger.grant(account, 10**9, reason="test")
        for stream in (False, True):
            body = CHAT | {"stream": stream}
            response = await ledger_gateway.client.post(
                "/v1/chat/completions", json=body, headers=auth
            )
            assert response.status_code == 200, response.text
        expected = 2 * cost(MODEL, Usage(5, 4))  # counted: 4 completion tokens each
        assert await ledger_gateway.acc.ledger.balance(account) == 10**9 - expected
        assert await ledger_gateway.acc.ledger.pending_for_node(node.peer_id) == expected
        daily = await ledger_gateway.acc.usage.daily(account.removeprefix("user:"))
        assert sum(d.completion_tokens for d in daily) == 8
        evidence = [r.getMessage() for r in caplog.records if "token claim clamped" in r.message]
        assert len(evidence) == 2 and node.peer_id in evidence[0]
        assert "claimed 5+2000000000" in evidence[0] and "counted 4" in evidence[0]
        report = await verify_ledger(ledger_gateway.db, [ledger_gateway.identity.network_public])
        assert report.ok, report.problems
    finally:
        await node.close()


async def test_embeddings_are_charged_the_checked_input_tokens(ledger_gateway: Network) -> None:
    """An embedding job is paid from its receipt like a completion; a receipt claiming
    more input tokens than the router accepted is paid only the accepted count."""
    embed = {"model": MODEL, "input": ["ab", "cde"]}
    price = cost(MODEL, Usage(2, 0))  # the hostile node's honest usage: 1 token per input
    assert price > 0
    account, auth = await _user_with_key(ledger_gateway)
    await ledger_gateway.acc.ledger.grant(account, 10**9, reason="test")
    for claim in (None, Usage(1_000_000, 5)):
        node = HostileNode(
            ledger_gateway.root / f"embedder-{claim is None}",
            owner_dir=ledger_gateway.root / "tracker",
            url=f"ws://127.0.0.1:{ledger_gateway.port}{NODE_PATH}",
            network_public=ledger_gateway.identity.network_public,
            models=[model_info(embeddings=True)],
            script=Script(receipt_usage=claim),
        )
        await node.connect()
        peer = node.peer_id
        try:
            await eventually(lambda: ledger_gateway.tracker.registry.get(peer) is not None)  # noqa: B023
            response = await ledger_gateway.client.post("/v1/embeddings", json=embed, headers=auth)
            assert response.status_code == 200, response.text
            assert response.json()["usage"]["prompt_tokens"] == 2
            assert await ledger_gateway.acc.ledger.pending_for_node(node.peer_id) == price
        finally:
            await node.close()
        await eventually(lambda: ledger_gateway.tracker.registry.get(peer) is None)  # noqa: B023
    assert await ledger_gateway.acc.ledger.balance(account) == 10**9 - 2 * price
    report = await verify_ledger(ledger_gateway.db, [ledger_gateway.identity.network_public])
    assert report.ok and report.receipts == 2, report.problems


async def test_without_a_tokenizer_the_claim_is_bounded_by_what_was_streamed(
    ledger_gateway: Network,
) -> None:
    node = await _hostile(ledger_gateway, Script(receipt_usage=Usage(5, 2_000_000_000)))
    try:
        account, auth = await _user_with_key(ledger_gateway)
        await ledger_gateway.acc.ledger.grant(account, 10**9, reason="test")
        response = await ledger_gateway.client.post("/v1/chat/completions", json=CHAT, headers=auth)
        assert response.status_code == 200, response.text
        streamed = len(b"Hello, world.")
        bound = cost(MODEL, Usage(5, streamed + tolerance(streamed)))
        assert await ledger_gateway.acc.ledger.balance(account) == 10**9 - bound
    finally:
        await node.close()


async def test_inflated_prompt_tokens_are_bounded_by_the_models_context(
    ledger_gateway: Network,
) -> None:
    _count_with_tiny_vocab(ledger_gateway)
    node = await _hostile(ledger_gateway, Script(receipt_usage=Usage(1_000_000, 4)), context=512)
    try:
        account, auth = await _user_with_key(ledger_gateway)
        await ledger_gateway.acc.ledger.grant(account, 10**9, reason="test")
        response = await ledger_gateway.client.post("/v1/chat/completions", json=CHAT, headers=auth)
        assert response.status_code == 200, response.text
        assert await ledger_gateway.acc.ledger.balance(account) == 10**9 - cost(
            MODEL, Usage(512 - 4, 4)
        )
    finally:
        await node.close()


async def test_a_receipt_claiming_10_to_the_12_tokens_is_refused_and_costs_nothing(
    ledger_gateway: Network,
) -> None:
    """The observed attack: a signed receipt for 10**12 tokens after streaming a few."""
    node = await _hostile(ledger_gateway, Script(receipt_usage=Usage(5, 10**12)))
    try:
        account, auth = await _user_with_key(ledger_gateway)
        await ledger_gateway.acc.ledger.grant(account, 10**9, reason="test")
        before = ledger_gateway.acc.reputation.score(node.peer_id)
        response = await ledger_gateway.client.post("/v1/chat/completions", json=CHAT, headers=auth)
        assert response.status_code == 200
        assert await ledger_gateway.acc.ledger.balance(account) == 10**9
        assert await _count(ledger_gateway.db, LedgerReceiptRow) == 0
        assert ledger_gateway.acc.reputation.score(node.peer_id) < before
        report = await verify_ledger(ledger_gateway.db, [ledger_gateway.identity.network_public])
        assert report.ok and report.entries == 1  # the grant only
    finally:
        await node.close()


async def test_a_failed_audit_forfeits_the_nodes_escrow_to_its_payers(
    ledger_gateway: Network,
) -> None:
    await ledger_gateway.add_node("n1")
    node = ledger_gateway.agents[0][0]
    account, auth = await _user_with_key(ledger_gateway)
    await ledger_gateway.acc.ledger.grant(account, 1_000_000, reason="test")
    for _ in range(3):
        response = await ledger_gateway.client.post("/v1/chat/completions", json=CHAT, headers=auth)
        assert response.status_code == 200
    peer = node.identity.peer_id
    held = await ledger_gateway.acc.ledger.pending_for_node(peer)
    assert held > 0 and await ledger_gateway.acc.ledger.balance(account) == 1_000_000 - held
    assert await ledger_gateway.acc.ledger.forfeit_pending(peer, reason="audit failed") == held
    assert await ledger_gateway.acc.ledger.balance(account) == 1_000_000
    assert await ledger_gateway.acc.ledger.release_due(_after_window(ledger_gateway)) == 0
    assert await ledger_gateway.acc.ledger.balance(ledger_gateway.owner) == 0
    assert (await verify_ledger(ledger_gateway.db, [ledger_gateway.identity.network_public])).ok


async def test_a_stream_read_to_the_end_and_dropped_before_done_is_charged(
    ledger_gateway: Network,
) -> None:
    await ledger_gateway.add_node("n1")
    account, auth = await _user_with_key(ledger_gateway)
    await ledger_gateway.acc.ledger.grant(account, 1_000_000, reason="test")
    body = CHAT | {"stream": True}
    async with ledger_gateway.client.stream(
        "POST", "/v1/chat/completions", json=body, headers=auth
    ) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if '"finish_reason":"stop"' in line.replace(" ", ""):
                break  # everything read; leave before [DONE]
    # The server settles as the stream closes, shielded from the client's departure.
    for _ in range(250):
        if await ledger_gateway.acc.ledger.balance(account) < 1_000_000:
            break
        await asyncio.sleep(0.02)
    assert await ledger_gateway.acc.ledger.balance(account) < 1_000_000
    daily = await ledger_gateway.acc.usage.daily(account.removeprefix("user:"))
    assert sum(d.completion_tokens for d in daily) == len(ANSWER)
