"""Escrow: a job's credits wait in ``system:escrow`` until its audit window closes.

With an audit window (``LICHEN_AUDIT_WINDOW_S`` > 0) a settlement is a **hold**:
the consumer pays ``system:escrow`` and a ``ledger_escrow`` row remembers who will
be paid and when (``due_ms``, also sealed into the hold entry's memo as
``due_ms=<ms>``, so the journal proves it). Then exactly one of:

- **release** (``Ledger.release_due``, run periodically): once ``due_ms`` has
  passed, ``system:escrow`` pays the node's owner;
- **forfeit** (``Ledger.forfeit_pending``, called by the audits when a node fails
  one): every pending hold of that node goes *back to the payer* who paid for the
  job. The consumer was served by a node caught cheating, so the refund is theirs;
  no new account is needed and no credits are created or destroyed.

Both are journal entries that name the receipt, so ``lichen ledger verify``
re-derives every escrow row and checks that no release came before its due time.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from lichen.ledger.batch import Batch
from lichen.ledger.journal import seal
from lichen.ledger.names import ESCROW
from lichen.storage.ledger_tables import LedgerEscrowRow

__all__ = [
    "CLOSE_LIMIT",
    "HOLD_MEMO_PREFIX",
    "PENDING",
    "close_pending",
    "hold_memo",
    "parse_hold_memo",
    "pending_total",
]

PENDING, RELEASED, FORFEITED = "pending", "released", "forfeited"
HOLD_MEMO_PREFIX = "due_ms="
CLOSE_LIMIT = 500  # holds closed per transaction; callers loop for more


def hold_memo(due_ms: int) -> str:
    return f"{HOLD_MEMO_PREFIX}{due_ms}"


def parse_hold_memo(memo: str) -> int | None:
    """The due time sealed into a hold entry's memo, or None if it is not one."""
    if not memo.startswith(HOLD_MEMO_PREFIX):
        return None
    digits = memo.removeprefix(HOLD_MEMO_PREFIX)
    return int(digits) if digits.isdigit() else None


def escrow_row(
    *,
    receipt_hash: str,
    node_peer_id: str,
    payer: str,
    payee: str,
    amount: int,
    hold_seq: int,
    due_ms: int,
    now_ms: int,
) -> dict[str, Any]:
    return {
        "receipt_hash": receipt_hash,
        "node_peer_id": node_peer_id,
        "payer": payer,
        "payee": payee,
        "amount": amount,
        "hold_seq": hold_seq,
        "due_ms": due_ms,
        "state": PENDING,
        "closed_seq": None,
        "recorded_ms": now_ms,
    }


async def close_pending(
    conn: AsyncConnection,
    batch: Batch,
    key: Ed25519PrivateKey,
    *,
    where: ColumnElement[bool],
    forfeit_reason: str | None,
    now_ms: int,
) -> tuple[int, int]:
    """Release (``forfeit_reason`` None) or forfeit up to :data:`CLOSE_LIMIT` pending
    holds matching ``where``; returns (holds closed, micro-credits moved).

    Runs under the ledger's write lock, after the batch was flushed.
    """
    rows = (
        await conn.execute(
            LedgerEscrowRow.__table__.select()
            .where(LedgerEscrowRow.state == PENDING, where)
            .order_by(LedgerEscrowRow.hold_seq)
            .limit(CLOSE_LIMIT)
        )
    ).all()
    updates: list[dict[str, Any]] = []
    total = 0
    for row in rows:
        entry = seal(
            key,
            seq=batch.seq + 1,
            prev_hash=batch.prev,
            kind="release" if forfeit_reason is None else "forfeit",
            debit=ESCROW,
            credit=row.payee if forfeit_reason is None else row.payer,
            amount=int(row.amount),
            receipt_hash=row.receipt_hash,
            memo=forfeit_reason or "",
            recorded_ms=now_ms,
        )
        batch.add(entry)
        total += entry.amount
        updates.append(
            {
                "r_hash": row.receipt_hash,
                "r_state": RELEASED if forfeit_reason is None else FORFEITED,
                "r_closed": entry.seq,
            }
        )
    if updates:
        await conn.execute(
            update(LedgerEscrowRow)
            .where(LedgerEscrowRow.receipt_hash == bindparam("r_hash"))
            .values(state=bindparam("r_state"), closed_seq=bindparam("r_closed")),
            updates,
        )
    return len(updates), total


async def pending_total(
    engine: AsyncEngine, *, payee: str | None = None, peer_id: str | None = None
) -> int:
    """Micro-credits held for ``payee`` (an owner account) or for node ``peer_id``."""
    query = select(func.coalesce(func.sum(LedgerEscrowRow.amount), 0)).where(
        LedgerEscrowRow.state == PENDING
    )
    if payee is not None:
        query = query.where(LedgerEscrowRow.payee == payee)
    if peer_id is not None:
        query = query.where(LedgerEscrowRow.node_peer_id == peer_id)
    async with engine.connect() as conn:
        value = await conn.scalar(query)
    return int(value or 0)
