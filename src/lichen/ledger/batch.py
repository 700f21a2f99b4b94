"""One append transaction's work: entries, receipts, escrow rows and balance deltas.

The ledger (:mod:`lichen.ledger.service`) seals entries onto a :class:`Batch` while it
holds the database write lock, then :func:`flush` writes what accumulated; escrow
operations flush first, so they see every hold made earlier in the same batch.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from lichen.ledger.journal import JournalEntry
from lichen.storage.ledger_tables import (
    LedgerBalanceRow,
    LedgerEscrowRow,
    LedgerJournalRow,
    LedgerReceiptRow,
)

__all__ = ["ENTRY_COLUMNS", "Batch", "dialect_insert", "entry_from_row", "flush"]


@dataclass
class Batch:
    seq: int  # the newest entry's seq (written or not)
    prev: str  # its hash
    receipts: list[dict[str, Any]] = field(default_factory=list)
    escrows: list[dict[str, Any]] = field(default_factory=list)
    entries: list[JournalEntry] = field(default_factory=list)
    deltas: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    hashes: set[str] = field(default_factory=set)  # receipts settled in this batch
    jobs: set[str] = field(default_factory=set)

    def add(self, entry: JournalEntry) -> None:
        self.entries.append(entry)
        self.seq, self.prev = entry.seq, entry.entry_hash
        self.deltas[entry.debit] -= entry.amount
        self.deltas[entry.credit] += entry.amount


async def flush(conn: AsyncConnection, batch: Batch) -> None:
    """Write what ``batch`` accumulated (not the head row) and empty its lists."""
    if batch.receipts:
        await conn.execute(insert(LedgerReceiptRow), batch.receipts)
    if batch.entries:
        await conn.execute(insert(LedgerJournalRow), [_entry_row(e) for e in batch.entries])
    if batch.escrows:
        await conn.execute(insert(LedgerEscrowRow), batch.escrows)
    deltas = {a: d for a, d in batch.deltas.items() if d}
    if deltas:
        stmt = dialect_insert(conn)(LedgerBalanceRow)
        upsert = stmt.on_conflict_do_update(
            index_elements=[LedgerBalanceRow.account],
            set_={"balance": LedgerBalanceRow.balance + stmt.excluded.balance},
        )
        rows = [{"account": a, "balance": d} for a, d in sorted(deltas.items())]
        await conn.execute(upsert, rows)
    batch.receipts.clear()
    batch.escrows.clear()
    batch.entries.clear()
    batch.deltas.clear()


ENTRY_COLUMNS = (
    LedgerJournalRow.seq,
    LedgerJournalRow.prev_hash,
    LedgerJournalRow.kind,
    LedgerJournalRow.debit,
    LedgerJournalRow.credit,
    LedgerJournalRow.amount,
    LedgerJournalRow.receipt_hash,
    LedgerJournalRow.memo,
    LedgerJournalRow.recorded_ms,
    LedgerJournalRow.entry_hash,
    LedgerJournalRow.signer_key,
    LedgerJournalRow.signature,
)


def entry_from_row(row: Any) -> JournalEntry:
    return JournalEntry(
        seq=int(row.seq),
        prev_hash=row.prev_hash,
        kind=row.kind,
        debit=row.debit,
        credit=row.credit,
        amount=int(row.amount),
        receipt_hash=row.receipt_hash,
        memo=row.memo,
        recorded_ms=int(row.recorded_ms),
        entry_hash=row.entry_hash,
        signer_key=bytes(row.signer_key),
        signature=bytes(row.signature),
    )


def _entry_row(entry: JournalEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "prev_hash": entry.prev_hash,
        "entry_hash": entry.entry_hash,
        "kind": entry.kind,
        "debit": entry.debit,
        "credit": entry.credit,
        "amount": entry.amount,
        "receipt_hash": entry.receipt_hash,
        "memo": entry.memo,
        "recorded_ms": entry.recorded_ms,
        "signer_key": entry.signer_key,
        "signature": entry.signature,
    }


def dialect_insert(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
