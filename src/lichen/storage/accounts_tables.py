"""Tables of accounts, API keys, sessions and usage (the credit ledger's are in
:mod:`lichen.storage.ledger_tables`, node reputation's in
:mod:`lichen.storage.reputation_tables`; all three share the ``accounts`` migration).

A feature module of :mod:`lichen.storage.tables` (which imports it, so every table
here is part of ``Base.metadata``); the migration is
``migrations/versions/0002_accounts.py`` (branch ``accounts``). Each table holds
one privacy data class (:data:`ACCOUNTS_DATA_CLASS`), also carried per row in a
``data_class`` column like every other table.

Accounts carry a ``role``: ``user`` or ``operator``; an operator's API keys (with
the ``account`` scope) work on the admin API (migration ``0003_operators``, which
also adds :class:`OperatorActionRow`, the log of every admin write).

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
    ForeignKey,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from lichen.storage.tables import MODEL_NAME_MAX, REQUEST_METADATA, Base, BigIntId

ACCOUNT_DATA = "account"
API_KEY_DATA = "api_key"
SESSION_TOKEN_DATA = "session_token"
RECEIPT_DATA = "receipt"
NODE_MANIFEST_DATA = "node_manifest"

ID_MAX = 32  # uuid4().hex
USERNAME_MAX = 32
ROLE_USER = "user"
ROLE_OPERATOR = "operator"
ACCOUNT_ROLES = (ROLE_USER, ROLE_OPERATOR)
ACTION_MAX = 32  # "invite.create", "member.revoke", "credits.grant", ...
TARGET_MAX = 128  # an invite id, a peer id or a ledger account
DETAIL_MAX = 500
EMAIL_MAX = 254
DIGEST_MAX = 64  # hex SHA-256
LEDGER_ACCOUNT_MAX = 100  # "user:<id>", "owner:<hex key>", "system:issuance"


def data_class_column(value: str) -> Mapped[str]:
    """The ``data_class`` column of a table that holds only ``value``."""
    return mapped_column(String(32), default=value, server_default=value)


def data_class_check(value: str) -> CheckConstraint:
    return CheckConstraint(f"data_class = '{value}'", name="data_class")


class AccountRow(Base):
    """A person's account. Soft-deleted rows keep ``purge_after_ms`` until the sweeper runs."""

    __tablename__ = "account"
    __table_args__ = (
        CheckConstraint("role IN ('user', 'operator')", name="role"),
        data_class_check(ACCOUNT_DATA),
    )

    id: Mapped[str] = mapped_column(String(ID_MAX), primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_MAX), unique=True)  # lower case
    email: Mapped[str] = mapped_column(String(EMAIL_MAX), unique=True)  # lower case
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id PHC string
    created_ms: Mapped[int] = mapped_column(BigInteger)
    deleted_ms: Mapped[int | None] = mapped_column(BigInteger)  # soft delete time
    purge_after_ms: Mapped[int | None] = mapped_column(BigInteger, index=True)
    role: Mapped[str] = mapped_column(String(16), default=ROLE_USER, server_default=ROLE_USER)
    data_class: Mapped[str] = data_class_column(ACCOUNT_DATA)


class ApiKeyRow(Base):
    """An API key: only its SHA-256 digest and a short visible prefix are kept."""

    __tablename__ = "api_key"
    __table_args__ = (data_class_check(API_KEY_DATA),)

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
    data_class: Mapped[str] = data_class_column(API_KEY_DATA)


class SessionFamilyRow(Base):
    """One login: every access and refresh token rotated from it shares the family."""

    __tablename__ = "session_family"
    __table_args__ = (data_class_check(SESSION_TOKEN_DATA),)

    id: Mapped[str] = mapped_column(String(ID_MAX), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), index=True
    )
    created_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_ms: Mapped[int | None] = mapped_column(BigInteger)  # logout or refresh reuse
    data_class: Mapped[str] = data_class_column(SESSION_TOKEN_DATA)


class SessionTokenRow(Base):
    """An access or refresh token of a session family (digest only)."""

    __tablename__ = "session_token"
    __table_args__ = (
        CheckConstraint("kind IN ('access', 'refresh')", name="kind"),
        data_class_check(SESSION_TOKEN_DATA),
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
    data_class: Mapped[str] = data_class_column(SESSION_TOKEN_DATA)


class AccountUsageRow(Base):
    """Daily totals per account and model (metadata only)."""

    __tablename__ = "account_usage"
    __table_args__ = (data_class_check(REQUEST_METADATA),)

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
    data_class: Mapped[str] = data_class_column(REQUEST_METADATA)


class OperatorActionRow(Base):
    """One write through the admin API: who (operator account and key), what, on what.

    Never a secret (an invite's token, a key) and never request content; the
    ``detail`` is a short summary such as ``"max_uses=3 expires_ms=..."``.
    """

    __tablename__ = "operator_action"
    __table_args__ = (data_class_check(ACCOUNT_DATA),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    created_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    account_id: Mapped[str] = mapped_column(String(ID_MAX), index=True)  # kept after a purge
    key_id: Mapped[str] = mapped_column(String(ID_MAX))
    action: Mapped[str] = mapped_column(String(ACTION_MAX))
    target: Mapped[str] = mapped_column(String(TARGET_MAX))
    detail: Mapped[str] = mapped_column(String(DETAIL_MAX))
    data_class: Mapped[str] = data_class_column(ACCOUNT_DATA)


ACCOUNTS_DATA_CLASS: dict[str, str] = {
    AccountRow.__tablename__: ACCOUNT_DATA,
    ApiKeyRow.__tablename__: API_KEY_DATA,
    SessionFamilyRow.__tablename__: SESSION_TOKEN_DATA,
    SessionTokenRow.__tablename__: SESSION_TOKEN_DATA,
    AccountUsageRow.__tablename__: REQUEST_METADATA,
    OperatorActionRow.__tablename__: ACCOUNT_DATA,
}
