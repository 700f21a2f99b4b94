"""The ledger on SQLite and PostgreSQL: settlements, grants, refusals, concurrency."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger_kit import MODEL, NodeKeys
from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import generate_key, public_raw
from lichen.ledger import Claim, Ledger, cost, user_account
from lichen.ledger.names import ISSUANCE
from lichen.ledger.receipts import Receipt
from lichen.ledger.verify import verify_ledger
from lichen.storage.ledger_tables import LedgerJournalRow, LedgerReceiptRow
from lichen.wire.messages import Usage

NETWORK_KEY = generate_key()


def _user() -> str:
    return user_account(uuid.uuid4().hex)


@pytest.fixture
def ledger(lichen_db: AsyncEngine) -> Ledger:
    return Ledger(lichen_db, NETWORK_KEY)


async def _count(engine: AsyncEngine, table: type[object]) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[arg-type]


async def test_settlement_debits_the_consumer_and_credits_the_nodes_owner(ledger: Ledger) -> None:
    alice, node = _user(), NodeKeys()
    await ledger.grant(alice, 1_000, reason="test credits")
    settled = await ledger.settle(
        Claim(receipt=node.receipt(prompt=10, completion=20), consumer=alice)
    )
    price = cost(MODEL, Usage(10, 20))
    assert settled.amount == price > 0
    assert settled.payee == node.owner
    assert await ledger.balance(alice) == 1_000 - price
    assert await ledger.balance(node.owner) == price
    assert await ledger.balance(ISSUANCE) == -1_000
    assert await ledger.circulating() == 1_000
    history = await ledger.history(alice)
    assert [e.kind for e in history] == ["settle", "grant"]


async def test_new_identities_start_with_nothing(ledger: Ledger) -> None:
    assert await ledger.balance(_user()) == 0
    assert await ledger.balance(NodeKeys().owner) == 0
    assert await ledger.circulating() == 0


async def test_a_replayed_receipt_is_refused(ledger: Ledger, lichen_db: AsyncEngine) -> None:
    alice, node = _user(), NodeKeys()
    receipt = node.receipt()
    await ledger.settle(Claim(receipt=receipt, consumer=alice))
    with pytest.raises(LichenError) as info:
        await ledger.settle(Claim(receipt=receipt, consumer=alice))
    assert info.value.code is ErrorCode.REPLAYED
    with pytest.raises(LichenError) as info:
        await ledger.settle(Claim(receipt=receipt, consumer=_user()))  # someone else pays? no
    assert info.value.code is ErrorCode.REPLAYED
    assert await _count(lichen_db, LedgerReceiptRow) == 1


async def test_a_second_receipt_for_the_same_job_is_refused(ledger: Ledger) -> None:
    alice, node = _user(), NodeKeys()
    await ledger.settle(Claim(receipt=node.receipt(job_id="job-7"), consumer=alice))
    again = node.receipt(job_id="job-7", issued_ms=1_700_000_000_001)
    with pytest.raises(LichenError) as info:
        await ledger.settle(Claim(receipt=again, consumer=alice))
    assert info.value.code is ErrorCode.REPLAYED


async def test_forged_and_altered_receipts_are_refused(
    ledger: Ledger, lichen_db: AsyncEngine
) -> None:
    alice, node = _user(), NodeKeys()
    receipt = msgspec.msgpack.decode(node.receipt(), type=Receipt)
    altered = msgspec.msgpack.encode(msgspec.structs.replace(receipt, usage=Usage(10, 10**9)))
    forged = msgspec.msgpack.encode(msgspec.structs.replace(receipt, signature=bytes(64)))
    for bad in (altered, forged, b"\x93garbage"):
        with pytest.raises(LichenError) as info:
            await ledger.settle(Claim(receipt=bad, consumer=alice))
        assert info.value.code is ErrorCode.RECEIPT_INVALID
    assert await _count(lichen_db, LedgerJournalRow) == 0


async def test_a_receipt_must_match_the_job_that_was_served(ledger: Ledger) -> None:
    alice, node, other = _user(), NodeKeys(), NodeKeys()
    receipt = node.receipt(job_id="job-1")
    for claim in (
        Claim(receipt=receipt, consumer=alice, peer_id=other.peer_id),
        Claim(receipt=receipt, consumer=alice, job_id="job-2"),
        Claim(receipt=receipt, consumer=alice, model="another-model"),
    ):
        with pytest.raises(LichenError) as info:
            await ledger.settle(claim)
        assert info.value.code is ErrorCode.RECEIPT_INVALID
    ok = Claim(receipt=receipt, consumer=alice, peer_id=node.peer_id, job_id="job-1", model=MODEL)
    assert (await ledger.settle(ok)).job_id == "job-1"


async def test_grants_need_a_reason_and_a_positive_amount(ledger: Ledger) -> None:
    for amount, reason in ((0, "x"), (-5, "x"), (5, "  ")):
        with pytest.raises(LichenError):
            await ledger.grant(_user(), amount, reason=reason)
    with pytest.raises(LichenError):
        await ledger.grant(ISSUANCE, 5, reason="self")
    with pytest.raises(LichenError):
        await ledger.grant("alice", 5, reason="not a ledger account")


async def test_one_thousand_concurrent_settlements_keep_the_invariant(
    ledger: Ledger, lichen_db: AsyncEngine
) -> None:
    users = [_user() for _ in range(10)]
    nodes = [NodeKeys() for _ in range(5)]
    for user in users:
        await ledger.grant(user, 1_000_000, reason="load test")
    before = await ledger.circulating()
    receipts = [
        (users[i % len(users)], nodes[i % len(nodes)].receipt(prompt=i % 13, completion=i % 29))
        for i in range(1000)
    ]
    # A few replays mixed in: each must be refused exactly once.
    replays = [receipts[i] for i in range(0, 1000, 100)]
    # Two ledgers on one database, like two gateway processes.
    other = Ledger(lichen_db, NETWORK_KEY)
    results = await asyncio.gather(
        *(
            (ledger if i % 2 else other).settle(Claim(receipt=r, consumer=u))
            for i, (u, r) in enumerate(receipts + replays)
        ),
        return_exceptions=True,
    )
    settled = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(settled) == 1000
    assert len(refused) == len(replays)
    assert all(isinstance(e, LichenError) and e.code is ErrorCode.REPLAYED for e in refused)
    assert await ledger.circulating() == before
    balances = await ledger.balances()
    assert sum(balances.values()) == 0
    spent = sum(s.amount for s in settled)  # type: ignore[union-attr]
    assert sum(balances[n.owner] for n in nodes if n.owner in balances) == spent
    assert sorted(s.seq for s in settled) == list(range(11, 1011))  # type: ignore[union-attr]
    report = await verify_ledger(lichen_db, [public_raw(NETWORK_KEY)])
    assert report.ok, report.problems[:3]
    assert report.entries == 1010 and report.receipts == 1000
