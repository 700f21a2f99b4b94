"""Tables of accounts, API keys, sessions, usage, the credit ledger and node reputation.

A feature module of :mod:`lichen.storage.tables` (which imports it, so every table
here is part of ``Base.metadata``); the migration is
``migrations/versions/0002_accounts.py`` (branch ``accounts``). Each table holds
one privacy data class (:data:`ACCOUNTS_DATA_CLASS`), also carried per row in a
``data_class`` column like every other table.

Secrets are never stored: passwords as argon2 hashes, API keys and session tokens
as SHA-256 digests of high-entropy random strings.

The privacy retention sweeper ages rows by their ``created_ms`` column: session
tokens (and, through ``ON DELETE CASCADE``, their families) and daily usage rows
expire as the policy says. The ledger's tables name their time ``recorded_ms``
instead: the journal is append-only and hash-chained, so no sweeper may thin it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from lichen.storage.tables import MODEL_NAME_MAX, PEER_ID_MAX, REQUEST_METADATA, Base, BigIntId

ACCOUNT_DATA = "account"
API_KEY_DATA = "api_key"
SESSION_TOKEN_DATA = "session_token"
RECEIPT_DATA = "receipt"
NODE_MANIFEST_DATA = "node_manifest"

ID_MAX = 32  # uuid4().hex
USERNAME_MAX = 32
EMAIL_MAX = 254
DIGEST_MAX = 64  # hex SHA-256
LEDGER_ACCOUNT_MAX = 100  # "user:<id>", "owner:<hex key>", "system:issuance"


def _data_class(value: str) -> Mapped[str]:
    return mapped_column(String(32), default=value, server_default=value)


def _data_class_check(value: str) -> CheckConstraint:
    return CheckConstraint(f"data_class = '{value}'", name="data_class")


class AccountRow(Base):
    """A person's account. Soft-deleted rows keep ``purge_after_ms`` until the sweeper runs."""

    __tablename__ = "account"
    __table_args__ = (_data_class_check(ACCOUNT_DATA),)

    id: Mapped[str] = mapped_column(String(ID_MAX), primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_MAX), unique=True)  # lower case
    email: Mapped[str] = mapped_column(String(EMAIL_MAX), unique=True)  # lower case
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id PHC string
    created_ms: Mapped[int] = mapped_column(BigInteger)
    deleted_ms: Mapped[int | None] = mapped_column(BigInteger)  # soft delete time
    purge_after_ms: Mapped[int | None] = mapped_column(BigInteger, index=True)
    data_class: Mapped[str] = _data_class(ACCOUNT_DATA)


class ApiKeyRow(Base):
    """An API key: only its SHA-256 digest and a short visible prefix are kept."""

    __tablename__ = "api_key"
    __table_args__ = (_data_class_check(API_KEY_DATA),)

    id: Mapped[str] = mapped_column(String(ID_MAX), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))  # "lk-abcd1234", shown in listings
    key_hash: Mapped[str] = mapped_column(String(DIGEST_MAX), unique=True)
    scopes: Mapped[str] = mapped_column(String(100))  # space-separated
    created_ms: Mapped[int] = mapped_column(BigInteger)
    last_used_ms: Mapped[int | None] = mapped_column(BigInteger)
    revoked_ms: Mapped[int | None] = mapped_column(BigInteger)
    data_class: Mapped[str] = _data_class(API_KEY_DATA)


class SessionFamilyRow(Base):
    """One login: every access and refresh token rotated from it shares the family."""

    __tablename__ = "session_family"
    __table_args__ = (_data_class_check(SESSION_TOKEN_DATA),)

    id: Mapped[str] = mapped_column(String(ID_MAX), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), index=True
    )
    created_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_ms: Mapped[int | None] = mapped_column(BigInteger)  # logout or refresh reuse
    data_class: Mapped[str] = _data_class(SESSION_TOKEN_DATA)


class SessionTokenRow(Base):
    """An access or refresh token of a session family (digest only)."""

    __tablename__ = "session_token"
    __table_args__ = (
        CheckConstraint("kind IN ('access', 'refresh')", name="kind"),
        _data_class_check(SESSION_TOKEN_DATA),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    family_id: Mapped[str] = mapped_column(
        ForeignKey("session_family.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str] = mapped_column(String(DIGEST_MAX), unique=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    expires_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    used_ms: Mapped[int | None] = mapped_column(BigInteger)  # refresh: when it was rotated
    data_class: Mapped[str] = _data_class(SESSION_TOKEN_DATA)


class AccountUsageRow(Base):
    """Daily totals per account and model (metadata only)."""

    __tablename__ = "account_usage"
    __table_args__ = (_data_class_check(REQUEST_METADATA),)

    account_id: Mapped[str] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # UTC "YYYY-MM-DD"
    model: Mapped[str] = mapped_column(String(MODEL_NAME_MAX), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    credits: Mapped[int] = mapped_column(BigInteger)  # micro-credits charged
    created_ms: Mapped[int] = mapped_column(BigInteger, index=True)  # first request of the day
    data_class: Mapped[str] = _data_class(REQUEST_METADATA)


class LedgerReceiptRow(Base):
    """A settled receipt: the node-signed bytes and the gateway's countersignature."""

    __tablename__ = "ledger_receipt"
    __table_args__ = (_data_class_check(RECEIPT_DATA),)

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
    data_class: Mapped[str] = _data_class(RECEIPT_DATA)


class LedgerJournalRow(Base):
    """One double-entry journal line, hash-chained to the previous one and signed."""

    __tablename__ = "ledger_journal"
    __table_args__ = (
        CheckConstraint("kind IN ('grant', 'settle', 'hold', 'release', 'forfeit')", name="kind"),
        CheckConstraint("amount >= 0", name="amount"),
        _data_class_check(RECEIPT_DATA),
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
    data_class: Mapped[str] = _data_class(RECEIPT_DATA)


class LedgerBalanceRow(Base):
    """Balance per ledger account; a cache of the journal that ``ledger verify`` re-derives."""

    __tablename__ = "ledger_balance"
    __table_args__ = (_data_class_check(RECEIPT_DATA),)

    account: Mapped[str] = mapped_column(String(LEDGER_ACCOUNT_MAX), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger)  # micro-credits
    data_class: Mapped[str] = _data_class(RECEIPT_DATA)


class LedgerHeadRow(Base):
    """The single row every append locks: the newest sequence number and hash."""

    __tablename__ = "ledger_head"
    __table_args__ = (_data_class_check(RECEIPT_DATA),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    seq: Mapped[int] = mapped_column(BigInteger)
    entry_hash: Mapped[str] = mapped_column(String(DIGEST_MAX))
    data_class: Mapped[str] = _data_class(RECEIPT_DATA)


class LedgerEscrowRow(Base):
    """A held settlement: credits in ``system:escrow`` until its audit window closes.

    An index of the journal's hold/release/forfeit entries (migration
    ``0003_escrow``); ``lichen ledger verify`` re-derives every row from the journal.
    """

    __tablename__ = "ledger_escrow"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'released', 'forfeited')", name="state"),
        _data_class_check(RECEIPT_DATA),
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
    data_class: Mapped[str] = _data_class(RECEIPT_DATA)


class NodeReputationRow(Base):
    """Persisted reputation of one node: data about the node, never about its users."""

    __tablename__ = "node_reputation"
    __table_args__ = (_data_class_check(NODE_MANIFEST_DATA),)

    peer_id: Mapped[str] = mapped_column(String(PEER_ID_MAX), primary_key=True)
    success: Mapped[float] = mapped_column(Float)  # decayed success rate, 0..1
    ttft_s: Mapped[float | None] = mapped_column(Float)  # EWMA time to first token
    latency_s: Mapped[float | None] = mapped_column(Float)  # EWMA whole-answer latency
    volume: Mapped[float] = mapped_column(Float)  # decayed tokens served
    jobs: Mapped[int] = mapped_column(BigInteger)  # all-time successes
    failures: Mapped[int] = mapped_column(BigInteger)  # all-time failures
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    data_class: Mapped[str] = _data_class(NODE_MANIFEST_DATA)


ACCOUNTS_DATA_CLASS: dict[str, str] = {
    AccountRow.__tablename__: ACCOUNT_DATA,
    ApiKeyRow.__tablename__: API_KEY_DATA,
    SessionFamilyRow.__tablename__: SESSION_TOKEN_DATA,
    SessionTokenRow.__tablename__: SESSION_TOKEN_DATA,
    AccountUsageRow.__tablename__: REQUEST_METADATA,
    LedgerReceiptRow.__tablename__: RECEIPT_DATA,
    LedgerJournalRow.__tablename__: RECEIPT_DATA,
    LedgerBalanceRow.__tablename__: RECEIPT_DATA,
    LedgerHeadRow.__tablename__: RECEIPT_DATA,
    LedgerEscrowRow.__tablename__: RECEIPT_DATA,
    NodeReputationRow.__tablename__: NODE_MANIFEST_DATA,
}
