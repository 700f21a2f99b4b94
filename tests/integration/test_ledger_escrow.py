"""Escrow on SQLite and PostgreSQL: credits held until the audit window closes, released
on time, forfeited on demand, and every edit of an escrow row found by ``ledger verify``."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from alembic import command
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger_kit import MODEL, NodeKeys
from lichen.clock import ManualClock, to_ms
from lichen.errors import LichenError
from lichen.identity.signing import generate_key, public_raw
from lichen.ledger import Claim, Ledger, cost, user_account
from lichen.ledger.batch import ENTRY_COLUMNS, entry_from_row
from lichen.ledger.journal import seal
from lichen.ledger.names import ESCROW
from lichen.ledger.releaser import EscrowReleaser, release_interval
from lichen.ledger.verify import VerifyReport, verify_ledger
from lichen.storage.engine import alembic_config
from lichen.storage.ledger_tables import (
    LedgerBalanceRow,
    LedgerEscrowRow,
    LedgerHeadRow,
    LedgerJournalRow,
)
from lichen.wire.messages import Usage

NETWORK_KEY = generate_key()
WINDOW_MS = 60_000
PRICE = cost(MODEL, Usage(10, 20))


def _user() -> str:
    return user_account(uuid.uuid4().hex)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def ledger(lichen_db: AsyncEngine, clock: ManualClock) -> Ledger:
    return Ledger(lichen_db, NETWORK_KEY, clock=clock, audit_window_ms=WINDOW_MS)


async def _verify(engine: AsyncEngine) -> VerifyReport:
    return await verify_ledger(engine, [public_raw(NETWORK_KEY)])


async def _execute(engine: AsyncEngine, statement: object) -> None:
    async with engine.begin() as conn:
        await conn.execute(statement)  # type: ignore[arg-type]


async def test_credits_are_pending_until_the_window_closes(
    ledger: Ledger, clock: ManualClock, lichen_db: AsyncEngine
) -> None:
    alice, node = _user(), NodeKeys()
    await ledger.grant(alice, 1_000, reason="test")
    settled = await ledger.settle(Claim(receipt=node.receipt(), consumer=alice))
    assert settled.amount == PRICE and settled.due_ms == to_ms(clock()) + WINDOW_MS
    assert await ledger.balance(alice) == 1_000 - PRICE  # the consumer has paid
    assert await ledger.balance(node.owner) == 0  # the owner has nothing yet
    assert await ledger.pending(node.owner) == PRICE
    assert await ledger.pending_for_node(node.peer_id) == PRICE
    assert await ledger.balance(ESCROW) == PRICE
    clock.advance(WINDOW_MS / 1000 - 1)
    assert await ledger.release_due() == 0  # one second early: nothing
    assert await ledger.balance(node.owner) == 0
    clock.advance(1)
    assert await ledger.release_due() == PRICE
    assert await ledger.balance(node.owner) == PRICE
    assert await ledger.pending(node.owner) == 0
    assert await ledger.balance(ESCROW) == 0
    assert await ledger.release_due() == 0  # released once only
    assert sum((await ledger.balances()).values()) == 0
    report = await _verify(lichen_db)
    assert report.ok, report.problems
    kinds = [e.kind for e in reversed(await ledger.history(node.owner))]
    assert kinds == ["release"]


async def test_release_due_takes_an_explicit_time(ledger: Ledger, clock: ManualClock) -> None:
    alice, node = _user(), NodeKeys()
    settled = await ledger.settle(Claim(receipt=node.receipt(), consumer=alice))
    assert settled.due_ms is not None
    assert await ledger.release_due(settled.due_ms - 1) == 0
    assert await ledger.release_due(settled.due_ms) == PRICE


async def test_a_forfeit_refunds_the_payers_of_that_node_only(
    ledger: Ledger, clock: ManualClock, lichen_db: AsyncEngine
) -> None:
    alice, bob, cheat, honest = _user(), _user(), NodeKeys(), NodeKeys()
    for user in (alice, bob):
        await ledger.grant(user, 1_000, reason="test")
    for i in range(3):
        await ledger.settle(Claim(receipt=cheat.receipt(), consumer=alice if i else bob))
    await ledger.settle(Claim(receipt=honest.receipt(), consumer=alice))
    clock.advance(30)
    forfeited = await ledger.forfeit_pending(cheat.peer_id, reason="audit failed: wrong model")
    assert forfeited == 3 * PRICE
    assert await ledger.balance(alice) == 1_000 - PRICE  # refunded both cheat jobs
    assert await ledger.balance(bob) == 1_000  # refunded
    assert await ledger.pending(cheat.owner) == 0
    assert await ledger.pending(honest.owner) == PRICE  # untouched
    assert await ledger.forfeit_pending(cheat.peer_id, reason="again") == 0
    clock.advance(WINDOW_MS / 1000)
    assert await ledger.release_due() == PRICE  # only the honest node is paid
    assert await ledger.balance(cheat.owner) == 0
    assert await ledger.balance(honest.owner) == PRICE
    assert sum((await ledger.balances()).values()) == 0
    report = await _verify(lichen_db)
    assert report.ok, report.problems
    history = await ledger.history(bob)
    assert history[0].kind == "forfeit" and history[0].memo == "audit failed: wrong model"


async def test_released_credits_are_not_forfeited(ledger: Ledger, clock: ManualClock) -> None:
    alice, node = _user(), NodeKeys()
    await ledger.settle(Claim(receipt=node.receipt(), consumer=alice))
    clock.advance(WINDOW_MS / 1000)
    await ledger.release_due()
    await ledger.settle(Claim(receipt=node.receipt(), consumer=alice))  # a new window
    assert await ledger.forfeit_pending(node.peer_id, reason="audit failed") == PRICE
    assert await ledger.balance(node.owner) == PRICE


async def test_a_forfeit_needs_a_reason(ledger: Ledger) -> None:
    for reason in ("", "   ", "x" * 501):
        with pytest.raises(LichenError):
            await ledger.forfeit_pending("peer", reason=reason)


async def test_concurrent_holds_releases_and_forfeits_keep_the_invariant(
    ledger: Ledger, clock: ManualClock, lichen_db: AsyncEngine
) -> None:
    users = [_user() for _ in range(4)]
    nodes = [NodeKeys() for _ in range(4)]
    for user in users:
        await ledger.grant(user, 10**6, reason="load")
    other = Ledger(lichen_db, NETWORK_KEY, clock=clock, audit_window_ms=WINDOW_MS)
    work = [
        (ledger if i % 2 else other).settle(
            Claim(receipt=nodes[i % 4].receipt(), consumer=users[i % 4])
        )
        for i in range(200)
    ]
    work += [ledger.forfeit_pending(nodes[0].peer_id, reason="audit failed") for _ in range(3)]
    work += [other.release_due(to_ms(clock()) + WINDOW_MS) for _ in range(3)]
    results = await asyncio.gather(*work, return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)]
    settled = sum(r.amount for r in results[:200])  # type: ignore[union-attr]
    forfeited = sum(results[200:203])  # type: ignore[arg-type]
    forfeited += await ledger.forfeit_pending(nodes[0].peer_id, reason="audit failed")
    released = sum(results[203:])  # type: ignore[arg-type]
    released += await ledger.release_due(to_ms(clock()) + WINDOW_MS)
    assert forfeited + released == settled  # every hold closed exactly once
    assert await ledger.balance(ESCROW) == 0
    assert await ledger.pending_for_node(nodes[0].peer_id) == 0
    assert await ledger.circulating() == 4 * 10**6
    assert sum((await ledger.balances()).values()) == 0
    report = await _verify(lichen_db)
    assert report.ok, report.problems[:3]


# --- tampering with escrow --------------------------------------------------------------


@pytest.fixture
async def held(ledger: Ledger, clock: ManualClock) -> list[str]:
    """Three holds (one released, one forfeited, one pending); their receipt hashes."""
    alice, node, other = _user(), NodeKeys(), NodeKeys()
    await ledger.grant(alice, 10_000, reason="test")
    first = await ledger.settle(Claim(receipt=node.receipt(), consumer=alice))
    clock.advance(WINDOW_MS / 1000)
    await ledger.release_due()
    second = await ledger.settle(Claim(receipt=other.receipt(), consumer=alice))
    await ledger.forfeit_pending(other.peer_id, reason="audit failed")
    third = await ledger.settle(Claim(receipt=node.receipt(), consumer=alice))
    return [first.receipt_hash, second.receipt_hash, third.receipt_hash]


async def _problems(engine: AsyncEngine) -> str:
    report = await _verify(engine)
    assert not report.ok
    return " | ".join(p.reason for p in report.problems)


async def test_a_clean_escrow_verifies(held: list[str], lichen_db: AsyncEngine) -> None:
    report = await _verify(lichen_db)
    assert report.ok, report.problems


async def test_an_earlier_due_time_is_found(held: list[str], lichen_db: AsyncEngine) -> None:
    row = LedgerEscrowRow.receipt_hash == held[2]
    await _execute(lichen_db, update(LedgerEscrowRow).where(row).values(due_ms=0))
    assert f"escrow row {held[2]} differs" in await _problems(lichen_db)


async def test_a_pending_row_marked_released_is_found(
    held: list[str], lichen_db: AsyncEngine
) -> None:
    row = LedgerEscrowRow.receipt_hash == held[2]
    await _execute(lichen_db, update(LedgerEscrowRow).where(row).values(state="released"))
    assert "journal says pending" in await _problems(lichen_db)


async def test_a_forfeited_row_marked_pending_is_found(
    held: list[str], lichen_db: AsyncEngine
) -> None:
    row = LedgerEscrowRow.receipt_hash == held[1]
    await _execute(
        lichen_db, update(LedgerEscrowRow).where(row).values(state="pending", closed_seq=None)
    )
    assert "journal says forfeited" in await _problems(lichen_db)


async def test_deleted_and_invented_escrow_rows_are_found(
    held: list[str], lichen_db: AsyncEngine
) -> None:
    which = LedgerEscrowRow.receipt_hash == held[2]
    async with lichen_db.connect() as conn:
        row = (await conn.execute(LedgerEscrowRow.__table__.select().where(which))).one()
    await _execute(lichen_db, delete(LedgerEscrowRow).where(which))
    invented = {**row._mapping, "receipt_hash": "f" * 64}
    await _execute(lichen_db, insert(LedgerEscrowRow).values(**invented))
    problems = await _problems(lichen_db)
    assert f"escrow row of hold {held[2]} is missing" in problems
    assert "has no hold in the journal" in problems


async def test_an_escrow_balance_moved_to_an_owner_is_found(
    held: list[str], lichen_db: AsyncEngine
) -> None:
    """Someone moves the escrow's balance to an owner without a journal entry."""
    escrow = LedgerBalanceRow.account == ESCROW
    await _execute(lichen_db, update(LedgerBalanceRow).where(escrow).values(balance=0))
    problems = await _problems(lichen_db)
    assert "escrow balance is 0 but open holds sum to" in problems


async def test_an_early_release_signed_with_the_network_key_is_found(
    held: list[str], lichen_db: AsyncEngine, clock: ManualClock
) -> None:
    """Even with the network key, a release before the sealed due time is caught."""
    async with lichen_db.connect() as conn:
        head = (await conn.execute(select(LedgerHeadRow.seq, LedgerHeadRow.entry_hash))).one()
        which = LedgerEscrowRow.receipt_hash == held[2]
        hold_row = (await conn.execute(LedgerEscrowRow.__table__.select().where(which))).one()
        last = (
            await conn.execute(select(*ENTRY_COLUMNS).where(LedgerJournalRow.seq == head.seq))
        ).one()
    early = seal(
        NETWORK_KEY,
        seq=head.seq + 1,
        prev_hash=entry_from_row(last).entry_hash,
        kind="release",
        debit=ESCROW,
        credit=hold_row.payee,
        amount=int(hold_row.amount),
        receipt_hash=held[2],
        memo="",
        recorded_ms=int(hold_row.due_ms) - 1,
    )
    values = {c.key: getattr(early, c.key) for c in ENTRY_COLUMNS}
    await _execute(lichen_db, insert(LedgerJournalRow).values(**values))
    problems = await _problems(lichen_db)
    assert "released before its audit window closed" in problems


async def test_a_hold_rewritten_as_a_settlement_is_found(
    held: list[str], lichen_db: AsyncEngine
) -> None:
    entry = LedgerJournalRow.receipt_hash == held[2]
    await _execute(lichen_db, update(LedgerJournalRow).where(entry).values(kind="settle"))
    assert "altered" in await _problems(lichen_db)


# --- the migration ----------------------------------------------------------------------


async def _alembic(engine: AsyncEngine, action: str, target: str) -> None:
    def run(conn: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = conn
        getattr(command, action)(config, target)

    async with engine.connect() as conn:
        await conn.run_sync(run)
        await conn.commit()


async def test_a_ledger_from_before_escrow_upgrades_intact(
    lichen_db: AsyncEngine, clock: ManualClock
) -> None:
    """Down to the accounts schema, a ledger written there, then up: verify still holds."""
    await _alembic(lichen_db, "downgrade", "0003_escrow-1")
    old = Ledger(lichen_db, NETWORK_KEY, clock=clock)  # window 0: only grant/settle rows
    alice, node = _user(), NodeKeys()
    await old.grant(alice, 1_000, reason="before escrow")
    await old.settle(Claim(receipt=node.receipt(), consumer=alice))
    await _alembic(lichen_db, "upgrade", "heads")
    new = Ledger(lichen_db, NETWORK_KEY, clock=clock, audit_window_ms=WINDOW_MS)
    await new.settle(Claim(receipt=node.receipt(), consumer=alice))
    assert await new.balance(node.owner) == PRICE and await new.pending(node.owner) == PRICE
    report = await _verify(lichen_db)
    assert report.ok, report.problems
    assert report.entries == 3


async def test_the_releaser_pays_owners_when_the_window_closes(
    ledger: Ledger, clock: ManualClock
) -> None:
    assert release_interval(600) == 30 and release_interval(5) == 1 and release_interval(0) == 30
    alice, node = _user(), NodeKeys()
    await ledger.settle(Claim(receipt=node.receipt(), consumer=alice))
    releaser = EscrowReleaser(ledger, interval_s=0.01)
    releaser.start()
    try:
        clock.advance(WINDOW_MS / 1000)
        for _ in range(500):  # until the periodic task has run
            if await ledger.balance(node.owner):
                break
            await asyncio.sleep(0.01)
        assert await ledger.balance(node.owner) == PRICE
    finally:
        await releaser.stop()
