"""``lichen ledger verify``: re-check every signature, the hash chain and the balances.

Read-only. Walks the journal in order and reports every problem it finds, each
with the entry it concerns:

- sequence gaps (deleted entries) and broken links (``prev_hash``);
- an entry whose fields no longer hash to its ``entry_hash`` (edited in place);
- a signature that does not verify, or a signer that is not a trusted network key;
- for settlements: a missing receipt, a receipt whose node signature or
  certificate fails, a countersignature that fails, or amounts and accounts that
  differ from what was countersigned;
- grants that do not come from ``system:issuance`` or lack a reason;
- escrow: a hold that does not pay ``system:escrow`` or lacks its sealed due time;
  a release or forfeit without an open hold, to the wrong account, for another
  amount, or (release) before the due time; a second settlement of one receipt;
  ``ledger_escrow`` rows that differ from what the journal derives (edited,
  inserted or deleted), and an escrow balance that is not the sum of open holds;
- balances that differ from the journal, and a head row that is not the last entry.

What it cannot see: the newest entries deleted together with a matching edit of
the head row. Publish ``head`` (printed on success) somewhere else to catch that.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.errors import LichenError
from lichen.ledger.batch import ENTRY_COLUMNS, entry_from_row
from lichen.ledger.escrow import parse_hold_memo
from lichen.ledger.journal import GENESIS_HASH, JournalEntry, expected_hash, verify_signature
from lichen.ledger.names import ESCROW, ISSUANCE, owner_account
from lichen.ledger.receipts import verify_countersignature, verify_receipt
from lichen.storage.ledger_tables import (
    LedgerBalanceRow,
    LedgerEscrowRow,
    LedgerHeadRow,
    LedgerJournalRow,
    LedgerReceiptRow,
)

PAGE = 1000


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int | None  # the journal entry concerned, None for ledger-wide problems
    reason: str
    entry: dict[str, Any] | None = None  # the stored entry, for the report


@dataclass
class VerifyReport:
    entries: int = 0
    receipts: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def describe(entry: JournalEntry) -> dict[str, Any]:
    """An entry as plain JSON-able data (keys and signatures in hex)."""
    return {
        "seq": entry.seq,
        "kind": entry.kind,
        "debit": entry.debit,
        "credit": entry.credit,
        "amount": entry.amount,
        "receipt_hash": entry.receipt_hash,
        "memo": entry.memo,
        "recorded_ms": entry.recorded_ms,
        "prev_hash": entry.prev_hash,
        "entry_hash": entry.entry_hash,
        "signer_key": entry.signer_key.hex(),
        "signature": entry.signature.hex(),
    }


async def verify_ledger(engine: AsyncEngine, trusted_keys: Collection[bytes]) -> VerifyReport:
    """Check the whole ledger against ``trusted_keys`` (raw network public keys)."""
    trusted = {bytes(k) for k in trusted_keys}
    report = VerifyReport()
    derived: dict[str, int] = defaultdict(int)
    referenced: set[str] = set()
    escrow = _EscrowBook()
    prev_seq, prev_hash = 0, GENESIS_HASH
    async with engine.connect() as conn:
        while True:
            rows = (
                await conn.execute(
                    select(*ENTRY_COLUMNS, *_RECEIPT_COLUMNS)
                    .select_from(LedgerJournalRow)
                    .outerjoin(
                        LedgerReceiptRow,
                        LedgerReceiptRow.receipt_hash == LedgerJournalRow.receipt_hash,
                    )
                    .where(LedgerJournalRow.seq > prev_seq)
                    .order_by(LedgerJournalRow.seq)
                    .limit(PAGE)
                )
            ).all()
            for row in rows:
                entry = entry_from_row(row)
                problems = _check_entry(entry, row, prev_seq, prev_hash, trusted)
                problems.extend(escrow.record(entry, row))
                report.problems.extend(Problem(entry.seq, p, describe(entry)) for p in problems)
                derived[entry.debit] -= entry.amount
                derived[entry.credit] += entry.amount
                if entry.receipt_hash:
                    referenced.add(entry.receipt_hash)
                prev_seq, prev_hash = entry.seq, entry.entry_hash
                report.entries += 1
            if len(rows) < PAGE:
                break
        stored = {
            r.account: int(r.balance)
            for r in (
                await conn.execute(select(LedgerBalanceRow.account, LedgerBalanceRow.balance))
            ).all()
        }
        head = (
            await conn.execute(
                select(LedgerHeadRow.seq, LedgerHeadRow.entry_hash).where(LedgerHeadRow.id == 1)
            )
        ).one_or_none()
        receipt_hashes = set(
            (await conn.execute(select(LedgerReceiptRow.receipt_hash))).scalars().all()
        )
        escrow_rows = (await conn.execute(LedgerEscrowRow.__table__.select())).all()
    report.receipts = len(receipt_hashes)
    report.head_seq, report.head_hash = prev_seq, prev_hash
    for account in sorted(set(stored) | set(derived)):
        if stored.get(account, 0) != derived.get(account, 0):
            report.problems.append(
                Problem(
                    None,
                    f"balance of {account} is {stored.get(account, 0)} "
                    f"but the journal gives {derived.get(account, 0)}",
                )
            )
    if sum(stored.values()) != 0:
        report.problems.append(Problem(None, f"balances sum to {sum(stored.values())}, not 0"))
    head_seq, head_hash = (head.seq, head.entry_hash) if head else (0, GENESIS_HASH)
    if (head_seq, head_hash) != (prev_seq, prev_hash):
        report.problems.append(
            Problem(None, f"head row says #{head_seq} but the journal ends at #{prev_seq}")
        )
    for orphan in sorted(receipt_hashes - referenced):
        report.problems.append(Problem(None, f"receipt {orphan} is not in the journal"))
    report.problems.extend(Problem(None, p) for p in escrow.compare(escrow_rows))
    held = escrow.pending_amount()
    if stored.get(ESCROW, 0) != held:
        report.problems.append(
            Problem(None, f"escrow balance is {stored.get(ESCROW, 0)} but open holds sum to {held}")
        )
    return report


@dataclass
class _Hold:
    seq: int
    payer: str
    payee: str
    amount: int
    due_ms: int
    node_peer_id: str
    closed: JournalEntry | None = None


@dataclass
class _EscrowBook:
    """What the journal says about each receipt: settled at once, or held and then closed."""

    settled: set[str] = field(default_factory=set)
    holds: dict[str, _Hold] = field(default_factory=dict)

    def record(self, entry: JournalEntry, row: Any) -> list[str]:
        key = entry.receipt_hash
        if key is None or entry.kind == "grant":
            return []
        if entry.kind in ("settle", "hold"):
            if key in self.settled or key in self.holds:
                return ["a second settlement of the same receipt"]
            if entry.kind == "settle":
                self.settled.add(key)
                return []
            due = parse_hold_memo(entry.memo)
            self.holds[key] = _Hold(
                entry.seq,
                entry.debit,
                row.r_payee or "",
                entry.amount,
                due if due is not None else -1,
                row.r_peer or "",
                None,
            )
            return [] if due is not None else ["a hold without its sealed due time"]
        hold = self.holds.get(key)
        if hold is None or hold.closed is not None:
            return [f"a {entry.kind} without an open hold of its receipt"]
        hold.closed = entry
        problems: list[str] = []
        target = hold.payee if entry.kind == "release" else hold.payer
        if (entry.debit, entry.credit, entry.amount) != (ESCROW, target, hold.amount):
            problems.append(f"{entry.kind} does not move the held amount from escrow to {target}")
        if entry.kind == "release" and entry.recorded_ms < hold.due_ms:
            problems.append("released before its audit window closed")
        if entry.kind == "forfeit" and not entry.memo:
            problems.append("a forfeit must say why")
        return problems

    def pending_amount(self) -> int:
        return sum(h.amount for h in self.holds.values() if h.closed is None)

    def compare(self, rows: Any) -> list[str]:
        problems: list[str] = []
        seen: set[str] = set()
        for row in rows:
            seen.add(row.receipt_hash)
            hold = self.holds.get(row.receipt_hash)
            if hold is None:
                problems.append(f"escrow row {row.receipt_hash} has no hold in the journal")
                continue
            closed = hold.closed
            state = "pending" if closed is None else _STATE[closed.kind]
            expected = (
                hold.payer,
                hold.payee,
                hold.amount,
                hold.seq,
                hold.due_ms,
                hold.node_peer_id,
                state,
                None if closed is None else closed.seq,
            )
            actual = (
                row.payer,
                row.payee,
                int(row.amount),
                int(row.hold_seq),
                int(row.due_ms),
                row.node_peer_id,
                row.state,
                None if row.closed_seq is None else int(row.closed_seq),
            )
            if actual != expected:
                problems.append(
                    f"escrow row {row.receipt_hash} differs from the journal "
                    f"(journal says {state}, due {hold.due_ms}, amount {hold.amount})"
                )
        for missing in sorted(set(self.holds) - seen):
            problems.append(f"escrow row of hold {missing} is missing")
        return problems


_STATE = {"release": "released", "forfeit": "forfeited"}


_RECEIPT_COLUMNS = (
    LedgerReceiptRow.receipt_hash.label("r_hash"),
    LedgerReceiptRow.job_id.label("r_job_id"),
    LedgerReceiptRow.node_peer_id.label("r_peer"),
    LedgerReceiptRow.consumer.label("r_consumer"),
    LedgerReceiptRow.payee.label("r_payee"),
    LedgerReceiptRow.amount.label("r_amount"),
    LedgerReceiptRow.body.label("r_body"),
    LedgerReceiptRow.countersignature.label("r_countersignature"),
    LedgerReceiptRow.signer_key.label("r_signer_key"),
)


def _check_entry(
    entry: JournalEntry, row: Any, prev_seq: int, prev_hash: str, trusted: set[bytes]
) -> list[str]:
    problems: list[str] = []
    if entry.seq != prev_seq + 1:
        problems.append(f"entries #{prev_seq + 1}..#{entry.seq - 1} are missing")
    if entry.prev_hash != prev_hash:
        problems.append("prev_hash does not link to the previous entry (chain broken)")
    if expected_hash(entry) != entry.entry_hash:
        problems.append("entry was altered: its fields do not hash to its entry_hash")
    if entry.signer_key not in trusted:
        problems.append("signed by a key that is not a trusted network key")
    elif not verify_signature(entry):
        problems.append("signature does not verify")
    if entry.amount < 0 or entry.debit == entry.credit:
        problems.append("not a valid double entry (negative amount or same account)")
    if entry.kind == "grant":
        if entry.debit != ISSUANCE or entry.receipt_hash is not None or not entry.memo:
            problems.append("a grant must come from system:issuance, with a reason")
    elif entry.kind in ("settle", "hold"):
        problems.extend(_check_settlement(entry, row, trusted))
    elif entry.kind in ("release", "forfeit"):
        if entry.receipt_hash is None or row.r_hash is None:
            problems.append(f"{entry.kind} without its receipt")
    else:
        problems.append(f"unknown entry kind {entry.kind!r}")
    return problems


def _check_settlement(entry: JournalEntry, row: Any, trusted: set[bytes]) -> list[str]:
    if entry.receipt_hash is None or row.r_hash is None:
        return ["settlement without its receipt"]
    body = bytes(row.r_body)
    try:
        verified = verify_receipt(body)
    except LichenError as error:
        return [f"receipt refused: {error.message}"]
    problems: list[str] = []
    if verified.hash != entry.receipt_hash:
        problems.append("receipt bytes do not hash to the receipt_hash")
    if verified.receipt.job_id != row.r_job_id:
        problems.append("receipt row's job id differs from the signed receipt")
    signer = bytes(row.r_signer_key)
    if signer not in trusted or not verify_countersignature(
        signer,
        bytes(row.r_countersignature),
        entry.receipt_hash,
        consumer=row.r_consumer,
        payee=row.r_payee,
        amount=int(row.r_amount),
    ):
        problems.append("gateway countersignature does not verify")
    credit = ESCROW if entry.kind == "hold" else row.r_payee
    if (entry.debit, entry.credit, entry.amount) != (row.r_consumer, credit, int(row.r_amount)):
        problems.append("entry's accounts or amount differ from the countersigned receipt")
    if row.r_payee != owner_account(verified.owner_key):
        problems.append("payee is not the owner of the node that signed the receipt")
    return problems
