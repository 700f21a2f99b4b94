"""Tables of the credit ledger: receipts, the hash-chained journal, balances, its head
and escrowed holds (migration ``0002_accounts.py``, branch ``accounts``).

They name their time ``recorded_ms``, not ``created_ms``: the journal is append-only
and hash-chained, so the retention sweeper never thins it.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from lichen.storage.accounts_tables import (
    DIGEST_MAX,
    LEDGER_ACCOUNT_MAX,
    RECEIPT_DATA,
    data_class_check,
    data_class_column,
)
from lichen.storage.tables import MODEL_NAME_MAX, PEER_ID_MAX, Base


class LedgerReceiptRow(Base):
    """A settled receipt: the node-signed bytes and the gateway's countersignature."""

    __tablename__ = "ledger_receipt"
    __table_args__ = (data_class_check(RECEIPT_DATA),)

    receipt_hash: Mapped[str] = mapped_column(String(DIGEST_MAX), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64), unique=True)
    node_peer_id: Mapped[str] = mapped_column(String(PEER_ID_MAX), index=True)
    consumer: Mapped[str] = mapped_column(String(LEDGER_ACCOUNT_MAX))
    payee: Mapped[str] = mapped_column(String(LEDGER_ACCOUNT_MAX))
    model: Mapped[str] = mapped_column(String(MODEL_NAME_MAX))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(BigInteger)  # micro-credits
    body: Mapped[bytes] = mapped_column(LargeBinary)  # msgpack Receipt, node-signed
    countersignature: Mapped[bytes] = mapped_column(LargeBinary)
    signer_key: Mapped[bytes] = mapped_column(LargeBinary)  # network public key that countersigned
    recorded_ms: Mapped[int] = mapped_column(BigInteger)  # not created_ms: never swept
    data_class: Mapped[str] = data_class_column(RECEIPT_DATA)


class LedgerJournalRow(Base):
    """One double-entry journal line, hash-chained to the previous one and signed."""

    __tablename__ = "ledger_journal"
    __table_args__ = (
        CheckConstraint("kind IN ('grant', 'settle', 'hold', 'release', 'forfeit')", name="kind"),
        CheckConstraint("amount >= 0", name="amount"),
        data_class_check(RECEIPT_DATA),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    prev_hash: Mapped[str] = mapped_column(String(DIGEST_MAX))
    entry_hash: Mapped[str] = mapped_column(String(DIGEST_MAX), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    debit: Mapped[str] = mapped_column(String(LEDGER_ACCOUNT_MAX), index=True)
    credit: Mapped[str] = mapped_column(String(LEDGER_ACCOUNT_MAX), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)  # micro-credits
    # A receipt's hold and its release (or forfeit) share it (migration 0003_escrow).
    receipt_hash: Mapped[str | None] = mapped_column(String(DIGEST_MAX), index=True)
    memo: Mapped[str] = mapped_column(String(500))  # grant/forfeit reason; hold: "due_ms=<ms>"
    recorded_ms: Mapped[int] = mapped_column(BigInteger)  # not created_ms: never swept
    signer_key: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    data_class: Mapped[str] = data_class_column(RECEIPT_DATA)


class LedgerBalanceRow(Base):
    """Balance per ledger account; a cache of the journal that ``ledger verify`` re-derives."""

    __tablename__ = "ledger_balance"
    __table_args__ = (data_class_check(RECEIPT_DATA),)

    account: Mapped[str] = mapped_column(String(LEDGER_ACCOUNT_MAX), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger)  # micro-credits
    data_class: Mapped[str] = data_class_column(RECEIPT_DATA)


class LedgerHeadRow(Base):
    """The single row every append locks: the newest sequence number and hash."""

    __tablename__ = "ledger_head"
    __table_args__ = (data_class_check(RECEIPT_DATA),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    seq: Mapped[int] = mapped_column(BigInteger)
    entry_hash: Mapped[str] = mapped_column(String(DIGEST_MAX))
    data_class: Mapped[str] = data_class_column(RECEIPT_DATA)


class LedgerEscrowRow(Base):
    """A held settlement: credits in ``system:escrow`` until its audit window closes.

    An index of the journal's hold/release/forfeit entries (migration
    ``0003_escrow``); ``lichen ledger verify`` re-derives every row from the journal.
    """

    __tablename__ = "ledger_escrow"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'released', 'forfeited')", name="state"),
        data_class_check(RECEIPT_DATA),
    )

    receipt_hash: Mapped[str] = mapped_column(String(DIGEST_MAX), primary_key=True)
    node_peer_id: Mapped[str] = mapped_column(String(PEER_ID_MAX), index=True)
    payer: Mapped[str] = mapped_column(String(LEDGER_ACCOUNT_MAX))
    payee: Mapped[str] = mapped_column(String(LEDGER_ACCOUNT_MAX), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)  # micro-credits
    hold_seq: Mapped[int] = mapped_column(BigInteger)  # the journal's hold entry
    due_ms: Mapped[int] = mapped_column(BigInteger, index=True)  # audit window closes
    state: Mapped[str] = mapped_column(String(16), index=True)
    closed_seq: Mapped[int | None] = mapped_column(BigInteger)  # release or forfeit entry
    recorded_ms: Mapped[int] = mapped_column(BigInteger)  # not created_ms: never swept
    data_class: Mapped[str] = data_class_column(RECEIPT_DATA)


LEDGER_DATA_CLASS: dict[str, str] = {
    LedgerReceiptRow.__tablename__: RECEIPT_DATA,
    LedgerJournalRow.__tablename__: RECEIPT_DATA,
    LedgerBalanceRow.__tablename__: RECEIPT_DATA,
    LedgerHeadRow.__tablename__: RECEIPT_DATA,
    LedgerEscrowRow.__tablename__: RECEIPT_DATA,
}
