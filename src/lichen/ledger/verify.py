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
from lichen.ledger.journal import GENESIS_HASH, JournalEntry, expected_hash, verify_signature
from lichen.ledger.names import ISSUANCE, owner_account
from lichen.ledger.receipts import verify_countersignature, verify_receipt
from lichen.ledger.service import ENTRY_COLUMNS, entry_from_row
from lichen.storage.accounts_tables import (
    LedgerBalanceRow,
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
    return report


_RECEIPT_COLUMNS = (
    LedgerReceiptRow.receipt_hash.label("r_hash"),
    LedgerReceiptRow.job_id.label("r_job_id"),
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
    elif entry.kind == "settle":
        problems.extend(_check_settlement(entry, row, trusted))
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
    if (entry.debit, entry.credit, entry.amount) != (
        row.r_consumer,
        row.r_payee,
        int(row.r_amount),
    ):
        problems.append("entry's accounts or amount differ from the countersigned receipt")
    if row.r_payee != owner_account(verified.owner_key):
        problems.append("payee is not the owner of the node that signed the receipt")
    return problems
