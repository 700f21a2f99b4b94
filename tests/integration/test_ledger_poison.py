"""Poisoned receipts on SQLite and PostgreSQL: out-of-range amounts get a typed error, and
one bad settlement never fails the honest ones committed in the same group."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger_kit import MODEL, NodeKeys
from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import generate_key, public_raw
from lichen.ledger import Claim, Ledger, cost, user_account
from lichen.ledger.journal import MAX_AMOUNT
from lichen.ledger.names import ISSUANCE
from lichen.ledger.verify import verify_ledger
from lichen.wire.messages import Usage

NETWORK_KEY = generate_key()
POISON_MODEL = "poison-135m"  # the test price function fails on it, inside the transaction
HUGE_MODEL = "huge-135m"  # priced at 2**63 micro-credits


def _price(model: str, usage: Usage) -> int:
    if model == POISON_MODEL:
        raise RuntimeError("a bug that only this settlement triggers")
    if model == HUGE_MODEL:
        return 2**63
    return cost(model, usage)


def _user() -> str:
    return user_account(uuid.uuid4().hex)


@pytest.fixture(params=[0, 60_000], ids=["paid", "escrow"])
def ledger(lichen_db: AsyncEngine, request: pytest.FixtureRequest) -> Ledger:
    return Ledger(lichen_db, NETWORK_KEY, price=_price, audit_window_ms=request.param)


async def test_amounts_beyond_the_database_integer_get_a_typed_error(ledger: Ledger) -> None:
    alice, node = _user(), NodeKeys()
    for bad in (2**63, 2**64 - 1, 2**31):  # beyond the wire's token count: malformed
        with pytest.raises(LichenError) as info:
            await ledger.settle(Claim(receipt=node.receipt(completion=bad), consumer=alice))
        assert info.value.code is ErrorCode.RECEIPT_INVALID
    with pytest.raises(LichenError) as info:  # a price beyond the largest amount
        await ledger.settle(Claim(receipt=node.receipt(model=HUGE_MODEL), consumer=alice))
    assert info.value.code is ErrorCode.AMOUNT_OUT_OF_RANGE
    for amount in (2**63, MAX_AMOUNT + 1):
        with pytest.raises(LichenError) as info:
            await ledger.grant(alice, amount, reason="overflow")
        assert info.value.code is ErrorCode.AMOUNT_OUT_OF_RANGE
    # A gateway-counted usage is range-checked the same way.
    with pytest.raises(LichenError) as info:
        await ledger.settle(Claim(receipt=node.receipt(), consumer=alice, usage=Usage(0, 2**63)))
    assert info.value.code is ErrorCode.AMOUNT_OUT_OF_RANGE
    assert await ledger.balance(alice) == 0
    assert await ledger.grant(alice, MAX_AMOUNT, reason="the largest grant")


async def test_settlement_prices_the_gateways_count_not_the_nodes_claim(ledger: Ledger) -> None:
    alice, node = _user(), NodeKeys()
    claimed = node.receipt(prompt=10, completion=10**9)
    settled = await ledger.settle(Claim(receipt=claimed, consumer=alice, usage=Usage(10, 6)))
    assert settled.amount == cost(MODEL, Usage(10, 6))


async def test_a_thousand_concurrent_settlements_with_poison_mixed_in(
    ledger: Ledger, lichen_db: AsyncEngine
) -> None:
    users = [_user() for _ in range(10)]
    nodes = [NodeKeys() for _ in range(5)]
    for user in users:
        await ledger.grant(user, 10**7, reason="load test")
    before = await ledger.circulating()
    honest = [
        (users[i % 10], nodes[i % 5].receipt(prompt=i % 13, completion=i % 29)) for i in range(1000)
    ]
    poisoned = [
        (users[i % 10], nodes[i % 5].receipt(model=HUGE_MODEL if i % 2 else POISON_MODEL))
        for i in range(40)
    ]
    poisoned += [(users[i % 10], nodes[i % 5].receipt(completion=2**63 - i)) for i in range(10)]
    mixed = list(honest)
    for i, bad in enumerate(poisoned):  # spread through the burst, into every group commit
        mixed.insert(i * 25, bad)
    other = Ledger(lichen_db, NETWORK_KEY, price=_price, audit_window_ms=ledger.audit_window_ms)
    results = await asyncio.gather(
        *(
            (ledger if i % 2 else other).settle(Claim(receipt=r, consumer=u))
            for i, (u, r) in enumerate(mixed)
        ),
        return_exceptions=True,
    )
    honest_hashes = {r for _, r in honest}
    outcome = dict(zip([r for _, r in mixed], results, strict=True))
    failed_honest = [outcome[r] for r in honest_hashes if isinstance(outcome[r], BaseException)]
    assert failed_honest == []
    refused = [outcome[r] for _, r in poisoned]
    assert all(isinstance(e, BaseException) for e in refused)
    typed = [e for e in refused if isinstance(e, LichenError)]
    codes = sorted(e.code for e in typed)
    assert codes == [ErrorCode.AMOUNT_OUT_OF_RANGE] * 20 + [ErrorCode.RECEIPT_INVALID] * 10
    assert await ledger.circulating() == before
    balances = await ledger.balances()
    assert sum(balances.values()) == 0
    assert balances[ISSUANCE] == -before
    report = await verify_ledger(lichen_db, [public_raw(NETWORK_KEY)])
    assert report.ok, report.problems[:3]
    assert report.receipts == 1000
