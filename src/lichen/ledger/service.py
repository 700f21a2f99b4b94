"""The credit ledger: settle receipts, grant credits, read balances and history.

Concurrency (documented choice): every append takes the ledger's one write lock
in the database, so appends are serialised across processes and gateways:
``BEGIN IMMEDIATE`` on SQLite (the database write lock) and ``SELECT ... FOR
UPDATE`` on the single ``ledger_head`` row on PostgreSQL (READ COMMITTED; every
read after the lock sees everything committed before it). Inside one process,
appends are *group-committed*: callers queue their operation, and whoever holds
the process's asyncio lock writes every queued operation in one transaction, so
a burst of settlements costs a few transactions instead of one each.

Settlement never refuses for lack of funds (the answer was already served); the
gateway refuses requests up front (402) when credits are enforced. It does refuse
receipts that are forged, altered, replayed (same bytes or same job twice), or
that do not match the job the gateway ran.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lichen.clock import Clock, system_clock, to_ms
from lichen.errors import ErrorCode, LichenError
from lichen.ledger import pricing
from lichen.ledger.journal import GENESIS_HASH, JournalEntry, seal
from lichen.ledger.names import ISSUANCE, is_ledger_account, owner_account
from lichen.ledger.receipts import VerifiedReceipt, countersign, verify_receipt
from lichen.storage.accounts_tables import (
    LedgerBalanceRow,
    LedgerHeadRow,
    LedgerJournalRow,
    LedgerReceiptRow,
)
from lichen.wire.messages import Usage

log = logging.getLogger(__name__)

Price = Callable[[str, Usage], int]

MAX_BATCH = 256
MAX_ATTEMPTS = 8
MEMO_MAX = 500
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A gateway's request to settle one receipt."""

    receipt: bytes  # as the node sent it (JobEnd.receipt)
    consumer: str  # ledger account that pays, e.g. "user:<id>"
    peer_id: str | None = None  # the node that served, as authenticated on its link
    job_id: str | None = None  # the job the gateway ran
    model: str | None = None  # the model the gateway routed to


@dataclass(frozen=True, slots=True)
class Settlement:
    seq: int
    receipt_hash: str
    job_id: str
    consumer: str
    payee: str
    amount: int  # micro-credits


@dataclass
class _Op:
    kind: str  # "settle" | "grant"
    future: asyncio.Future[Any]
    verified: VerifiedReceipt | None = None
    consumer: str = ""
    account: str = ""
    amount: int = 0
    memo: str = ""
    taken: bool = False


@dataclass
class _Batch:
    seq: int
    prev: str
    receipts: list[dict[str, Any]] = field(default_factory=list)
    entries: list[JournalEntry] = field(default_factory=list)
    deltas: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    hashes: set[str] = field(default_factory=set)
    jobs: set[str] = field(default_factory=set)


class Ledger:
    """Append-only, hash-chained, double-entry journal of micro-credits."""

    def __init__(
        self,
        engine: AsyncEngine,
        network_key: Ed25519PrivateKey,
        *,
        clock: Clock = system_clock,
        price: Price = pricing.cost,
    ) -> None:
        self._engine = engine
        self._key = network_key
        self._clock = clock
        self._price = price
        self._lock = asyncio.Lock()
        self._pending: list[_Op] = []
        self._head_ready = False

    # --- writes -------------------------------------------------------------------------

    async def settle(self, claim: Claim) -> Settlement:
        """Debit the consumer, credit the node's owner, by the receipt's priced usage."""
        if not is_ledger_account(claim.consumer) or claim.consumer == ISSUANCE:
            raise LichenError(
                ErrorCode.INVALID_REQUEST, f"not a consumer account: {claim.consumer}"
            )
        verified = verify_receipt(claim.receipt)
        receipt = verified.receipt
        if claim.peer_id is not None and receipt.node_peer_id != claim.peer_id:
            raise _invalid("receipt is signed by another node than the one that served")
        if claim.job_id is not None and receipt.job_id != claim.job_id:
            raise _invalid("receipt is for another job")
        if claim.model is not None and receipt.model != claim.model:
            raise _invalid("receipt names another model than the one routed")
        result: Settlement = await self._submit(
            _Op("settle", self._future(), verified=verified, consumer=claim.consumer)
        )
        return result

    async def grant(self, account: str, amount: int, *, reason: str) -> JournalEntry:
        """An operator grant: new credits from ``system:issuance`` to ``account``, logged."""
        if not is_ledger_account(account) or account == ISSUANCE:
            raise LichenError(ErrorCode.INVALID_REQUEST, f"not a ledger account: {account}")
        if amount <= 0:
            raise LichenError(ErrorCode.INVALID_REQUEST, "a grant must be positive")
        reason = reason.strip()
        if not reason or len(reason) > MEMO_MAX:
            raise LichenError(
                ErrorCode.INVALID_REQUEST, f"a grant needs a reason of 1-{MEMO_MAX} characters"
            )
        entry: JournalEntry = await self._submit(
            _Op("grant", self._future(), account=account, amount=amount, memo=reason)
        )
        log.info("operator grant #%d: %d micro-credits to %s", entry.seq, amount, account)
        return entry

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, op: _Op) -> Any:
        self._pending.append(op)
        while not op.taken:  # commit queued batches (oldest first) until ours is written
            async with self._lock:
                if op.taken:
                    break
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                for queued in batch:
                    queued.taken = True
                # Shielded: a caller that goes away must not abort the others' commit.
                await asyncio.shield(self._commit(batch))
        return await op.future

    async def _commit(self, ops: list[_Op]) -> None:
        try:
            await self._ensure_head()
            results = await self._with_retries(ops)
        except Exception as exc:
            for op in ops:
                if not op.future.done():
                    op.future.set_exception(exc)
            return
        for op, result in zip(ops, results, strict=True):
            if op.future.done():
                continue
            if isinstance(result, LichenError):
                op.future.set_exception(result)
            else:
                op.future.set_result(result)

    async def _with_retries(self, ops: list[_Op]) -> list[Any]:
        for attempt in range(MAX_ATTEMPTS):
            try:
                return await self._append(ops)
            except DBAPIError as exc:
                if attempt == MAX_ATTEMPTS - 1 or not _retryable(exc):
                    raise
                log.info("ledger append conflicted (%s); retrying", type(exc.orig).__name__)
                await asyncio.sleep(0.01 * (2**attempt) * random.random())
        raise AssertionError("unreachable")

    async def _ensure_head(self) -> None:
        if self._head_ready:
            return
        async with self._engine.begin() as conn:
            stmt = _dialect_insert(conn)(LedgerHeadRow).values(id=1, seq=0, entry_hash=GENESIS_HASH)
            await conn.execute(stmt.on_conflict_do_nothing(index_elements=[LedgerHeadRow.id]))
        self._head_ready = True

    async def _append(self, ops: list[_Op]) -> list[Any]:
        async with self._engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            head = (
                await conn.execute(
                    select(LedgerHeadRow.seq, LedgerHeadRow.entry_hash)
                    .where(LedgerHeadRow.id == 1)
                    .with_for_update()
                )
            ).one()
            batch = _Batch(seq=head.seq, prev=head.entry_hash)
            now_ms = to_ms(self._clock())
            results: list[Any] = []
            for op in ops:
                if op.kind == "settle":
                    results.append(await self._settle_one(conn, batch, op, now_ms))
                else:
                    results.append(self._grant_one(batch, op, now_ms))
            await self._write(conn, batch)
            await conn.commit()
        return results

    async def _settle_one(
        self, conn: AsyncConnection, batch: _Batch, op: _Op, now_ms: int
    ) -> Settlement | LichenError:
        assert op.verified is not None
        verified = op.verified
        receipt = verified.receipt
        if verified.hash in batch.hashes or receipt.job_id in batch.jobs:
            return _replayed()
        seen = await conn.scalar(
            select(func.count())
            .select_from(LedgerReceiptRow)
            .where(
                or_(
                    LedgerReceiptRow.receipt_hash == verified.hash,
                    LedgerReceiptRow.job_id == receipt.job_id,
                )
            )
        )
        if seen:
            return _replayed()
        payee = owner_account(verified.owner_key)
        if payee == op.consumer:
            return _invalid("a node's owner cannot pay itself")
        amount = self._price(receipt.model, receipt.usage)
        entry = seal(
            self._key,
            seq=batch.seq + 1,
            prev_hash=batch.prev,
            kind="settle",
            debit=op.consumer,
            credit=payee,
            amount=amount,
            receipt_hash=verified.hash,
            memo="",
            recorded_ms=now_ms,
        )
        batch.receipts.append(
            {
                "receipt_hash": verified.hash,
                "job_id": receipt.job_id,
                "node_peer_id": receipt.node_peer_id,
                "consumer": op.consumer,
                "payee": payee,
                "model": receipt.model,
                "prompt_tokens": receipt.usage.prompt_tokens,
                "completion_tokens": receipt.usage.completion_tokens,
                "amount": amount,
                "body": verified.data,
                "countersignature": countersign(
                    self._key, verified.hash, consumer=op.consumer, payee=payee, amount=amount
                ),
                "signer_key": entry.signer_key,
                "recorded_ms": now_ms,
            }
        )
        batch.hashes.add(verified.hash)
        batch.jobs.add(receipt.job_id)
        self._add(batch, entry)
        return Settlement(
            seq=entry.seq,
            receipt_hash=verified.hash,
            job_id=receipt.job_id,
            consumer=op.consumer,
            payee=payee,
            amount=amount,
        )

    def _grant_one(self, batch: _Batch, op: _Op, now_ms: int) -> JournalEntry:
        entry = seal(
            self._key,
            seq=batch.seq + 1,
            prev_hash=batch.prev,
            kind="grant",
            debit=ISSUANCE,
            credit=op.account,
            amount=op.amount,
            receipt_hash=None,
            memo=op.memo,
            recorded_ms=now_ms,
        )
        self._add(batch, entry)
        return entry

    @staticmethod
    def _add(batch: _Batch, entry: JournalEntry) -> None:
        batch.entries.append(entry)
        batch.seq, batch.prev = entry.seq, entry.entry_hash
        batch.deltas[entry.debit] -= entry.amount
        batch.deltas[entry.credit] += entry.amount

    async def _write(self, conn: AsyncConnection, batch: _Batch) -> None:
        if not batch.entries:
            return
        if batch.receipts:
            await conn.execute(insert(LedgerReceiptRow), batch.receipts)
        await conn.execute(insert(LedgerJournalRow), [_entry_row(e) for e in batch.entries])
        stmt = _dialect_insert(conn)(LedgerBalanceRow)
        upsert = stmt.on_conflict_do_update(
            index_elements=[LedgerBalanceRow.account],
            set_={"balance": LedgerBalanceRow.balance + stmt.excluded.balance},
        )
        rows = [{"account": a, "balance": d} for a, d in sorted(batch.deltas.items())]
        await conn.execute(upsert, rows)
        await conn.execute(
            update(LedgerHeadRow)
            .where(LedgerHeadRow.id == 1)
            .values(seq=batch.seq, entry_hash=batch.prev)
        )

    # --- reads --------------------------------------------------------------------------

    async def balance(self, account: str) -> int:
        async with self._engine.connect() as conn:
            value = await conn.scalar(
                select(LedgerBalanceRow.balance).where(LedgerBalanceRow.account == account)
            )
        return int(value or 0)

    async def balances(self) -> dict[str, int]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(select(LedgerBalanceRow.account, LedgerBalanceRow.balance))
            ).all()
        return {row.account: int(row.balance) for row in rows}

    async def circulating(self) -> int:
        """Sum of every balance except the issuance account: changes only through grants."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(
                select(func.coalesce(func.sum(LedgerBalanceRow.balance), 0)).where(
                    LedgerBalanceRow.account != ISSUANCE
                )
            )
        return int(value or 0)

    async def history(self, account: str, *, limit: int = 100) -> list[JournalEntry]:
        """Entries that moved credits in or out of ``account``, newest first."""
        query = (
            select(*ENTRY_COLUMNS)
            .where(or_(LedgerJournalRow.debit == account, LedgerJournalRow.credit == account))
            .order_by(LedgerJournalRow.seq.desc())
            .limit(max(0, limit))
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [entry_from_row(row) for row in rows]


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


def _dialect_insert(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _retryable(exc: DBAPIError) -> bool:
    """Lock timeouts (SQLite), serialization failures and deadlocks (PostgreSQL)."""
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if sqlstate in ("40001", "40P01"):
        return True
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def _replayed() -> LichenError:
    return LichenError(ErrorCode.REPLAYED, "this receipt (or another for the same job) was settled")


def _invalid(message: str) -> LichenError:
    return LichenError(ErrorCode.RECEIPT_INVALID, message)
