"""The persisted schema, declared once (SQLAlchemy 2 declarative).

Every table holds exactly one data class of the privacy policy (docs/architecture.md §10),
listed in ``TABLE_DATA_CLASS``; each row also carries it in a ``data_class`` column so
audits and retention sweeps can work from the rows alone. Migrations under
``migrations/versions`` are written by hand to match these declarations.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    Integer,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

REQUEST_METADATA = "request_metadata"
MEMBERSHIP_DATA = "account_data"  # invites and member devices (keys, names, status)

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# A 64-bit key that is still SQLite's auto-incrementing rowid alias.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

MODEL_NAME_MAX = 200
PEER_ID_MAX = 128


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class RequestLog(Base):
    """One served request: metadata only, never prompt or completion text."""

    __tablename__ = "request_log"
    __table_args__ = (
        CheckConstraint("kind IN ('chat', 'completion')", name="kind"),
        CheckConstraint(f"data_class = '{REQUEST_METADATA}'", name="data_class"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    created_ms: Mapped[int] = mapped_column(BigInteger, index=True)  # unix epoch, milliseconds
    model: Mapped[str] = mapped_column(String(MODEL_NAME_MAX))
    kind: Mapped[str] = mapped_column(String(16))  # "chat" or "completion"
    status: Mapped[int] = mapped_column(Integer)  # HTTP status answered
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    ttft_ms: Mapped[int | None] = mapped_column(Integer)  # None when no token was produced
    latency_ms: Mapped[int] = mapped_column(Integer)
    node_peer_id: Mapped[str | None] = mapped_column(String(PEER_ID_MAX))
    stream: Mapped[bool]
    data_class: Mapped[str] = mapped_column(
        String(32), default=REQUEST_METADATA, server_default=REQUEST_METADATA
    )


class InviteRow(Base):
    """An invite the network key signed: the token itself is never stored, only its terms."""

    __tablename__ = "invites"
    __table_args__ = (
        CheckConstraint("uses >= 0 AND max_uses >= 0", name="uses"),
        CheckConstraint(f"data_class = '{MEMBERSHIP_DATA}'", name="data_class"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # Invite.invite_id
    roles: Mapped[str] = mapped_column(String(200))  # comma-separated, e.g. "node"
    max_uses: Mapped[int] = mapped_column(Integer)  # 0 = unlimited
    uses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    expires_ms: Mapped[int] = mapped_column(BigInteger)  # unix ms; 0 = never
    created_ms: Mapped[int] = mapped_column(BigInteger)
    revoked: Mapped[bool] = mapped_column(default=False, server_default=false())
    data_class: Mapped[str] = mapped_column(
        String(32), default=MEMBERSHIP_DATA, server_default=MEMBERSHIP_DATA
    )


class MemberRow(Base):
    """A device (node) of the network: who certified it, whether it may join."""

    __tablename__ = "members"
    __table_args__ = (
        CheckConstraint("status IN ('approved', 'pending', 'revoked')", name="status"),
        CheckConstraint(f"data_class = '{MEMBERSHIP_DATA}'", name="data_class"),
    )

    peer_id: Mapped[str] = mapped_column(String(PEER_ID_MAX), primary_key=True)
    device_key: Mapped[str] = mapped_column(String(64))  # hex of the raw Ed25519 public key
    account_key: Mapped[str] = mapped_column(String(64))  # hex; the key that certified it
    name: Mapped[str] = mapped_column(String(128))  # from the device certificate
    trust: Mapped[str] = mapped_column(String(32))  # "owner" | "community"
    status: Mapped[str] = mapped_column(String(16))  # "approved" | "pending" | "revoked"
    invite_id: Mapped[str | None] = mapped_column(String(64))  # the invite it joined with
    first_seen_ms: Mapped[int] = mapped_column(BigInteger)
    last_seen_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger, index=True)  # last status change
    data_class: Mapped[str] = mapped_column(
        String(32), default=MEMBERSHIP_DATA, server_default=MEMBERSHIP_DATA
    )


PROMPT_DATA = "prompt"
COMPLETION_DATA = "completion"
TELEMETRY_DATA = "telemetry"
REQUEST_ID_MAX = 64
SUBJECT_MAX = 64


class PromptLog(Base):
    """A prompt kept because the policy says so (``dataset`` logging or a public feed post)."""

    __tablename__ = "prompt_log"
    __table_args__ = (CheckConstraint(f"data_class = '{PROMPT_DATA}'", name="data_class"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_MAX), index=True, unique=True)
    created_ms: Mapped[int] = mapped_column(BigInteger, index=True)  # unix epoch, milliseconds
    subject: Mapped[str | None] = mapped_column(String(SUBJECT_MAX), index=True)  # pseudonymous
    deletion_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the deletion token
    public: Mapped[bool] = mapped_column(default=False, server_default=false())  # feed post
    model: Mapped[str] = mapped_column(String(MODEL_NAME_MAX))
    kind: Mapped[str] = mapped_column(String(16))  # "chat" or "completion"
    text: Mapped[str] = mapped_column(Text)  # JSON messages (chat) or the prompt (completion)
    data_class: Mapped[str] = mapped_column(
        String(32), default=PROMPT_DATA, server_default=PROMPT_DATA
    )


class CompletionLog(Base):
    """The answer to a logged prompt (same request id)."""

    __tablename__ = "completion_log"
    __table_args__ = (CheckConstraint(f"data_class = '{COMPLETION_DATA}'", name="data_class"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_MAX), index=True, unique=True)
    created_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    subject: Mapped[str | None] = mapped_column(String(SUBJECT_MAX), index=True)
    deletion_hash: Mapped[str] = mapped_column(String(64))
    public: Mapped[bool] = mapped_column(default=False, server_default=false())
    finish_reason: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    data_class: Mapped[str] = mapped_column(
        String(32), default=COMPLETION_DATA, server_default=COMPLETION_DATA
    )


class TelemetryLog(Base):
    """Counters a node opted in to send; never content, never addresses."""

    __tablename__ = "telemetry_log"
    __table_args__ = (CheckConstraint(f"data_class = '{TELEMETRY_DATA}'", name="data_class"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    created_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    peer_id: Mapped[str] = mapped_column(String(PEER_ID_MAX))
    requests: Mapped[int | None] = mapped_column(BigInteger)
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    models: Mapped[str | None] = mapped_column(String(1000))  # comma-separated model names
    uptime_s: Mapped[int | None] = mapped_column(BigInteger)
    data_class: Mapped[str] = mapped_column(
        String(32), default=TELEMETRY_DATA, server_default=TELEMETRY_DATA
    )


# Table name -> the privacy data class its rows hold. Every table in Base.metadata appears.
TABLE_DATA_CLASS: dict[str, str] = {
    RequestLog.__tablename__: REQUEST_METADATA,
    InviteRow.__tablename__: MEMBERSHIP_DATA,
    MemberRow.__tablename__: MEMBERSHIP_DATA,
    PromptLog.__tablename__: PROMPT_DATA,
    CompletionLog.__tablename__: COMPLETION_DATA,
    TelemetryLog.__tablename__: TELEMETRY_DATA,
}

# Feature modules that declare their tables on Base (imported last: they import Base).
from lichen.storage import accounts_tables  # noqa: E402

TABLE_DATA_CLASS.update(accounts_tables.ACCOUNTS_DATA_CLASS)

from lichen.storage import ledger_tables, reputation_tables  # noqa: E402

TABLE_DATA_CLASS.update(ledger_tables.LEDGER_DATA_CLASS)
TABLE_DATA_CLASS.update(reputation_tables.REPUTATION_DATA_CLASS)

from lichen.storage import models_tables  # noqa: E402

TABLE_DATA_CLASS.update(models_tables.MODELS_DATA_CLASS)

from lichen.storage import audit_tables  # noqa: E402

TABLE_DATA_CLASS.update(audit_tables.AUDIT_DATA_CLASS)
