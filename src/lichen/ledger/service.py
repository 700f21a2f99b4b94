"""The credit ledger: settle receipts, grant credits, read balances and history.

Concurrency (documented choice): every append takes the ledger's one write lock
in the database, so appends are serialised across processes and gateways:
``BEGIN IMMEDIATE`` on SQLite (the database write lock) and ``SELECT ... FOR
UPDATE`` on the single ``ledger_head`` row on PostgreSQL (READ COMMITTED; every
read after the lock sees everything committed before it). Inside one process,
appends are *group-committed*: callers queue their operation, and whoever holds
the process's asyncio lock writes every queued operation in one transaction, so
a burst of settlements costs a few transactions instead of one each.

Failures are isolated per operation: an operation the database refuses fails the
whole group commit, which is then retried one operation per transaction, so one
poisoned receipt never fails the honest settlements queued with it. Amounts and
token counts are range-checked first (``AMOUNT_OUT_OF_RANGE``).

Settlement never refuses for lack of funds (the answer was already served); the
gateway refuses requests up front (402) when credits are enforced. It does refuse
receipts that are forged, altered, replayed (same bytes or same job twice), or
that do not match the job the gateway ran.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lichen.clock import Clock, system_clock, to_ms
from lichen.errors import ErrorCode, LichenError
from lichen.ledger import pricing
from lichen.ledger.batch import ENTRY_COLUMNS, Batch, dialect_insert, entry_from_row, flush
from lichen.ledger.escrow import (
    CLOSE_LIMIT,
    PENDING,
    close_pending,
    escrow_row,
    hold_memo,
    pending_total,
)
from lichen.ledger.journal import GENESIS_HASH, MAX_AMOUNT, JournalEntry, seal
from lichen.ledger.names import ESCROW, ISSUANCE, is_ledger_account, owner_account
from lichen.ledger.receipts import VerifiedReceipt, countersign, verify_receipt
from lichen.storage.ledger_tables import (
    LedgerBalanceRow,
    LedgerEscrowRow,
    LedgerHeadRow,
    LedgerJournalRow,
    LedgerReceiptRow,
)
from lichen.wire.messages import Usage

__all__ = ["ENTRY_COLUMNS", "MAX_TOKENS", "Claim", "Ledger", "Settlement", "entry_from_row"]

log = logging.getLogger(__name__)

Price = Callable[[str, Usage], int]

MAX_BATCH = 256
MAX_ATTEMPTS = 8
MEMO_MAX = 500
MAX_TOKENS = 2**31 - 1  # token counts a settlement may price (the receipt table's INTEGER)
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A gateway's request to settle one receipt."""

    receipt: bytes  # as the node sent it (JobEnd.receipt)
    consumer: str  # ledger account that pays, e.g. "user:<id>"
    peer_id: str | None = None  # the node that served, as authenticated on its link
    job_id: str | None = None  # the job the gateway ran
    model: str | None = None  # the model the gateway routed to
    # What the gateway counted (and bounded) itself; priced instead of the receipt's
    # own claim. None: price the receipt's usage (tests, tools without a gateway).
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    seq: int
    receipt_hash: str
    job_id: str
    consumer: str
    payee: str
    amount: int  # micro-credits
    due_ms: int | None = None  # held in escrow until then (None: paid at once)


@dataclass
class _Op:
    kind: str  # "settle" | "grant" | "release" | "forfeit"
    future: asyncio.Future[Any]
    verified: VerifiedReceipt | None = None
    consumer: str = ""
    usage: Usage | None = None  # settle: the usage to price
    account: str = ""  # grant: who receives
    amount: int = 0
    memo: str = ""  # grant: reason; forfeit: reason
    peer_id: str = ""  # forfeit: the node
    now_ms: int | None = None  # release: the time to release up to
    taken: bool = False


class Ledger:
    """Append-only, hash-chained, double-entry journal of micro-credits.

    ``audit_window_ms`` > 0 holds every settlement in escrow (``system:escrow``)
    for that long; :meth:`release_due` pays the node's owner afterwards, and
    :meth:`forfeit_pending` refunds the payers of a node that failed an audit.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        network_key: Ed25519PrivateKey,
        *,
        clock: Clock = system_clock,
        price: Price = pricing.cost,
        audit_window_ms: int = 0,
    ) -> None:
        self._engine = engine
        self._key = network_key
        self._clock = clock
        self._price = price
        self.audit_window_ms = max(0, audit_window_ms)
        self._lock = asyncio.Lock()
        self._pending: list[_Op] = []
        self._head_ready = False

    # --- writes -------------------------------------------------------------------------

    async def settle(self, claim: Claim) -> Settlement:
        """Debit the consumer by the priced usage; credit the node's owner, or escrow
        until the audit window closes."""
        if not is_ledger_account(claim.consumer) or claim.consumer in (ISSUANCE, ESCROW):
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
        usage = claim.usage or receipt.usage
        for tokens in (usage.prompt_tokens, usage.completion_tokens):
            if not 0 <= tokens <= MAX_TOKENS:
                raise _out_of_range(f"token count {tokens} is outside 0..{MAX_TOKENS}")
        op = _Op("settle", self._future(), verified=verified, consumer=claim.consumer, usage=usage)
        result: Settlement = await self._submit(op)
        return result

    async def grant(self, account: str, amount: int, *, reason: str) -> JournalEntry:
        """An operator grant: new credits from ``system:issuance`` to ``account``, logged."""
        if not is_ledger_account(account) or account in (ISSUANCE, ESCROW):
            raise LichenError(ErrorCode.INVALID_REQUEST, f"not a ledger account: {account}")
        if amount <= 0:
            raise LichenError(ErrorCode.INVALID_REQUEST, "a grant must be positive")
        if amount > MAX_AMOUNT:
            raise _out_of_range(f"a grant is at most {MAX_AMOUNT} micro-credits")
        reason = _reason(reason)
        entry: JournalEntry = await self._submit(
            _Op("grant", self._future(), account=account, amount=amount, memo=reason)
        )
        log.info("operator grant #%d: %d micro-credits to %s", entry.seq, amount, account)
        return entry

    async def forfeit_pending(self, peer_id: str, *, reason: str) -> int:
        """Forfeit every pending (escrowed) credit of node ``peer_id``'s jobs: each goes
        back to the payer of that job. Returns the micro-credits forfeited."""
        reason = _reason(reason)
        total = 0
        while True:
            closed: tuple[int, int] = await self._submit(
                _Op("forfeit", self._future(), peer_id=peer_id, memo=reason)
            )
            total += closed[1]
            if closed[0] < CLOSE_LIMIT:
                break
        if total:
            log.warning("forfeited %d escrowed micro-credits of node %s", total, peer_id)
        return total

    async def release_due(self, now_ms: int | None = None) -> int:
        """Pay node owners every hold whose audit window closed by ``now_ms`` (default:
        now); returns the micro-credits released."""
        until = to_ms(self._clock()) if now_ms is None else now_ms
        if not await self._any_due(until):  # the common case: no write lock taken
            return 0
        total = 0
        while True:
            op = _Op("release", self._future(), now_ms=until)
            closed: tuple[int, int] = await self._submit(op)
            total += closed[1]
            if closed[0] < CLOSE_LIMIT:
                break
        return total

    async def _any_due(self, until_ms: int) -> bool:
        query = (
            select(LedgerEscrowRow.receipt_hash)
            .where(LedgerEscrowRow.state == PENDING, LedgerEscrowRow.due_ms <= until_ms)
            .limit(1)
        )
        async with self._engine.connect() as conn:
            return (await conn.scalar(query)) is not None

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
            if len(ops) == 1:
                _resolve(ops[0], exc)
                return
            # Isolation: one poisoned operation must not fail the honest ones.
            log.warning("ledger batch of %d failed (%s); committing each alone", len(ops), exc)
            for op in ops:
                try:
                    (result,) = await self._with_retries([op])
                except Exception as alone:
                    result = alone
                _resolve(op, result)
            return
        for op, result in zip(ops, results, strict=True):
            _resolve(op, result)

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
            stmt = dialect_insert(conn)(LedgerHeadRow).values(id=1, seq=0, entry_hash=GENESIS_HASH)
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
            batch = Batch(seq=head.seq, prev=head.entry_hash)
            now_ms = to_ms(self._clock())
            results: list[Any] = []
            for op in ops:
                if op.kind == "settle":
                    results.append(await self._settle_one(conn, batch, op, now_ms))
                elif op.kind == "grant":
                    results.append(self._grant_one(batch, op, now_ms))
                else:
                    results.append(await self._close_one(conn, batch, op, now_ms))
            await flush(conn, batch)
            await conn.execute(
                update(LedgerHeadRow)
                .where(LedgerHeadRow.id == 1)
                .values(seq=batch.seq, entry_hash=batch.prev)
            )
            await conn.commit()
        return results

    async def _settle_one(
        self, conn: AsyncConnection, batch: Batch, op: _Op, now_ms: int
    ) -> Settlement | LichenError:
        assert op.verified is not None and op.usage is not None
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
        amount = self._price(receipt.model, op.usage)
        if not 0 <= amount <= MAX_AMOUNT:
            return _out_of_range(f"a settlement is at most {MAX_AMOUNT} micro-credits")
        due_ms = now_ms + self.audit_window_ms if self.audit_window_ms else None
        entry = seal(
            self._key,
            seq=batch.seq + 1,
            prev_hash=batch.prev,
            kind="settle" if due_ms is None else "hold",
            debit=op.consumer,
            credit=payee if due_ms is None else ESCROW,
            amount=amount,
            receipt_hash=verified.hash,
            memo="" if due_ms is None else hold_memo(due_ms),
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
                "prompt_tokens": op.usage.prompt_tokens,  # as settled, not as claimed
                "completion_tokens": op.usage.completion_tokens,
                "amount": amount,
                "body": verified.data,
                "countersignature": countersign(
                    self._key, verified.hash, consumer=op.consumer, payee=payee, amount=amount
                ),
                "signer_key": entry.signer_key,
                "recorded_ms": now_ms,
            }
        )
        if due_ms is not None:
            batch.escrows.append(
                escrow_row(
                    receipt_hash=verified.hash,
                    node_peer_id=receipt.node_peer_id,
                    payer=op.consumer,
                    payee=payee,
                    amount=amount,
                    hold_seq=entry.seq,
                    due_ms=due_ms,
                    now_ms=now_ms,
                )
            )
        batch.hashes.add(verified.hash)
        batch.jobs.add(receipt.job_id)
        batch.add(entry)
        return Settlement(
            seq=entry.seq,
            receipt_hash=verified.hash,
            job_id=receipt.job_id,
            consumer=op.consumer,
            payee=payee,
            amount=amount,
            due_ms=due_ms,
        )

    def _grant_one(self, batch: Batch, op: _Op, now_ms: int) -> JournalEntry:
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
        batch.add(entry)
        return entry

    async def _close_one(
        self, conn: AsyncConnection, batch: Batch, op: _Op, now_ms: int
    ) -> tuple[int, int]:
        await flush(conn, batch)  # holds made earlier in this batch are closable too
        if op.kind == "forfeit":
            where = LedgerEscrowRow.node_peer_id == op.peer_id
            return await close_pending(
                conn, batch, self._key, where=where, forfeit_reason=op.memo, now_ms=now_ms
            )
        until = now_ms if op.now_ms is None else op.now_ms
        return await close_pending(
            conn,
            batch,
            self._key,
            where=LedgerEscrowRow.due_ms <= until,
            forfeit_reason=None,
            now_ms=max(now_ms, until),
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

    async def pending(self, account: str) -> int:
        """Micro-credits held in escrow for ``account`` (a node owner), not yet available."""
        return await pending_total(self._engine, payee=account)

    async def pending_for_node(self, peer_id: str) -> int:
        """Micro-credits held in escrow for jobs served by node ``peer_id``."""
        return await pending_total(self._engine, peer_id=peer_id)

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


def _out_of_range(message: str) -> LichenError:
    return LichenError(ErrorCode.AMOUNT_OUT_OF_RANGE, message)


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason or len(reason) > MEMO_MAX:
        raise LichenError(
            ErrorCode.INVALID_REQUEST, f"a reason of 1-{MEMO_MAX} characters is required"
        )
    return reason


def _resolve(op: _Op, result: Any) -> None:
    if op.future.done():
        return
    if isinstance(result, BaseException):
        op.future.set_exception(result)
    else:
        op.future.set_result(result)
