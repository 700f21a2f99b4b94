"""``lichen ledger verify`` on SQLite and PostgreSQL: a clean ledger passes; every kind
of edit made directly in the database is found and named."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from ledger_kit import NodeKeys
from lichen.cli.main import app as cli
from lichen.identity.signing import generate_key
from lichen.identity.store import Identity, load_identity
from lichen.ledger import Claim, Ledger, user_account
from lichen.ledger.journal import seal
from lichen.ledger.receipts import Receipt
from lichen.ledger.service import ENTRY_COLUMNS, entry_from_row
from lichen.ledger.verify import VerifyReport, verify_ledger
from lichen.storage.engine import create_engine
from lichen.storage.ledger_tables import (
    LedgerBalanceRow,
    LedgerHeadRow,
    LedgerJournalRow,
    LedgerReceiptRow,
)
from lichen.wire.messages import Usage


@pytest.fixture
def identity(tmp_path: Path) -> Identity:
    return load_identity(tmp_path / "operator")


@pytest.fixture
async def ledger(lichen_db: AsyncEngine, identity: Identity) -> Ledger:
    """A small ledger: grants to two users, then settlements to two nodes."""
    ledger = Ledger(lichen_db, identity.network_key)
    users = [user_account(uuid.uuid4().hex) for _ in range(2)]
    nodes = [NodeKeys(), NodeKeys()]
    for user in users:
        await ledger.grant(user, 100_000, reason="test")
    for i in range(6):
        await ledger.settle(Claim(receipt=nodes[i % 2].receipt(), consumer=users[i % 2]))
    return ledger


async def _verify(engine: AsyncEngine, identity: Identity) -> VerifyReport:
    return await verify_ledger(engine, [identity.network_public])


async def _execute(engine: AsyncEngine, statement: object) -> None:
    async with engine.begin() as conn:
        await conn.execute(statement)  # type: ignore[arg-type]


async def test_a_clean_ledger_verifies(
    ledger: Ledger, lichen_db: AsyncEngine, identity: Identity
) -> None:
    report = await _verify(lichen_db, identity)
    assert report.ok, report.problems
    assert (report.entries, report.receipts, report.head_seq) == (8, 6, 8)


async def test_an_edited_amount_is_found(
    ledger: Ledger, lichen_db: AsyncEngine, identity: Identity
) -> None:
    await _execute(
        lichen_db,
        update(LedgerJournalRow).where(LedgerJournalRow.seq == 5).values(amount=10**9),
    )
    report = await _verify(lichen_db, identity)
    assert not report.ok
    assert 5 in {p.seq for p in report.problems}
    reasons = " ".join(p.reason for p in report.problems if p.seq == 5)
    assert "altered" in reasons


async def test_a_rehashed_entry_without_the_network_key_is_found(
    ledger: Ledger, lichen_db: AsyncEngine, identity: Identity
) -> None:
    """An attacker recomputes the hash after editing, signing with a key of their own."""
    async with lichen_db.connect() as conn:
        row = (await conn.execute(select(*ENTRY_COLUMNS).where(LedgerJournalRow.seq == 5))).one()
    target = entry_from_row(row)
    ledger_account = target.credit
    forged = seal(
        generate_key(),
        seq=target.seq,
        prev_hash=target.prev_hash,
        kind=target.kind,
        debit=target.debit,
        credit=target.credit,
        amount=target.amount * 10,
        receipt_hash=target.receipt_hash,
        memo=target.memo,
        recorded_ms=target.recorded_ms,
    )
    await _execute(
        lichen_db,
        update(LedgerJournalRow)
        .where(LedgerJournalRow.seq == target.seq)
        .values(
            amount=forged.amount,
            entry_hash=forged.entry_hash,
            signer_key=forged.signer_key,
            signature=forged.signature,
        ),
    )
    report = await _verify(lichen_db, identity)
    problems: dict[int | None, str] = {}
    for problem in report.problems:
        problems[problem.seq] = problems.get(problem.seq, "") + problem.reason + "; "
    assert "trusted network key" in problems[target.seq]
    assert "chain broken" in problems[target.seq + 1]
    assert any(f"balance of {ledger_account}" in p.reason for p in report.problems)


async def test_a_deleted_entry_is_found(
    ledger: Ledger, lichen_db: AsyncEngine, identity: Identity
) -> None:
    await _execute(lichen_db, delete(LedgerJournalRow).where(LedgerJournalRow.seq == 4))
    report = await _verify(lichen_db, identity)
    assert any("missing" in p.reason for p in report.problems if p.seq == 5)


async def test_a_swapped_receipt_is_found(
    ledger: Ledger, lichen_db: AsyncEngine, identity: Identity
) -> None:
    """A receipt row's body replaced by an inflated copy (which cannot be re-signed)."""
    async with lichen_db.connect() as conn:
        row = (await conn.execute(LedgerReceiptRow.__table__.select().limit(1))).one()
    receipt = msgspec.msgpack.decode(row.body, type=Receipt)
    inflated = msgspec.msgpack.encode(msgspec.structs.replace(receipt, usage=Usage(1, 10**6)))
    await _execute(
        lichen_db,
        update(LedgerReceiptRow)
        .where(LedgerReceiptRow.receipt_hash == row.receipt_hash)
        .values(body=inflated),
    )
    report = await _verify(lichen_db, identity)
    assert any("receipt refused" in p.reason for p in report.problems)


async def test_edited_balances_and_head_are_found(
    ledger: Ledger, lichen_db: AsyncEngine, identity: Identity
) -> None:
    await _execute(lichen_db, update(LedgerBalanceRow).values(balance=LedgerBalanceRow.balance + 1))
    await _execute(lichen_db, update(LedgerHeadRow).values(seq=3))
    reasons = [p.reason for p in (await _verify(lichen_db, identity)).problems]
    assert any(r.startswith("balance of") for r in reasons)
    assert any("head row" in r for r in reasons)


def _cli(operator: Path, url: str, *args: str) -> tuple[int, str]:
    """Run the ``lichen`` CLI in-process against ``url`` with ``operator``'s keys."""
    env = {"LICHEN_DATA_DIR": str(operator), "LICHEN_DATABASE_URL": url}
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.output


async def _edit_amount(url: str, seq: int, amount: int) -> None:
    engine = create_engine(url)
    try:
        update_row = update(LedgerJournalRow).where(LedgerJournalRow.seq == seq)
        await _execute(engine, update_row.values(amount=amount))
    finally:
        await engine.dispose()


def test_the_cli_passes_a_clean_ledger_and_names_an_edited_row(
    ledger: Ledger, lichen_db_url: str, tmp_path: Path
) -> None:
    operator = tmp_path / "operator"
    code, out = _cli(operator, lichen_db_url, "ledger", "verify")
    assert code == 0, out
    assert "ledger ok: 8 entries, 6 receipts" in out
    asyncio.run(_edit_amount(lichen_db_url, 6, 1))
    code, out = _cli(operator, lichen_db_url, "ledger", "verify")
    assert code == 1
    assert "entry #6" in out and "altered" in out
    assert '"seq": 6' in out  # the bad entry is printed


def test_the_cli_grants_and_shows_credits(
    lichen_db_url: str, identity: Identity, tmp_path: Path
) -> None:
    operator = tmp_path / "operator"
    account = user_account(uuid.uuid4().hex)
    grant = ["credits", "grant", account]
    code, out = _cli(operator, lichen_db_url, *grant, "2.5", "--reason", "pilot user")
    assert code == 0, out
    assert "granted 2.500000 credits" in out
    code, out = _cli(operator, lichen_db_url, "credits", account)
    assert code == 0, out
    assert "balance  2.500000 credits (2500000 micro-credits)" in out
    assert "pilot user" in out
    code, out = _cli(operator, lichen_db_url, "credits", "show", account, "--json")
    assert json.loads(out)["balance"] == 2_500_000
    for bad in (["1", "--reason", " "], ["-1", "--reason", "x"], ["0.0000001", "--reason", "x"]):
        code, out = _cli(operator, lichen_db_url, *grant, *bad)
        assert code != 0, bad


async def _hold_for(url: str, key: Ed25519PrivateKey, consumer: str, node: NodeKeys) -> int:
    engine = create_engine(url)
    try:
        ledger = Ledger(engine, key, audit_window_ms=600_000)
        await ledger.grant(consumer, 10_000, reason="test")
        return (await ledger.settle(Claim(receipt=node.receipt(), consumer=consumer))).amount
    finally:
        await engine.dispose()


def test_the_cli_shows_pending_and_available_credits(
    lichen_db_url: str, identity: Identity, tmp_path: Path
) -> None:
    operator, node, consumer = tmp_path / "operator", NodeKeys(), user_account(uuid.uuid4().hex)
    held = asyncio.run(_hold_for(lichen_db_url, identity.network_key, consumer, node))
    code, out = _cli(operator, lichen_db_url, "credits", "show", node.owner, "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert (shown["available"], shown["pending"]) == (0, held)
    code, out = _cli(operator, lichen_db_url, "credits", node.owner)
    assert f"pending    {held / 1e6:.6f}" in out and "available  0.000000" in out
    code, out = _cli(operator, lichen_db_url, "ledger", "verify")
    assert code == 0, out
