"""accounts: accounts, API keys, sessions, usage, the credit ledger and node reputation.

Revision ID: 0002_accounts
Revises: 0001
Create Date: 2025-01-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_accounts"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = ("accounts",)
depends_on: str | Sequence[str] | None = None

_TABLES = (
    "session_token",
    "session_family",
    "api_key",
    "account_usage",
    "node_reputation",
    "ledger_receipt",
    "ledger_journal",
    "ledger_head",
    "ledger_balance",
    "account",
)


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("username", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("deleted_ms", sa.BigInteger(), nullable=True),
        sa.Column("purge_after_ms", sa.BigInteger(), nullable=True),
        sa.Column("data_class", sa.String(length=32), server_default="account", nullable=False),
        sa.CheckConstraint("data_class = 'account'", name=op.f("ck_account_data_class")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account")),
        sa.UniqueConstraint("email", name=op.f("uq_account_email")),
        sa.UniqueConstraint("username", name=op.f("uq_account_username")),
    )
    op.create_index(op.f("ix_account_purge_after_ms"), "account", ["purge_after_ms"], unique=False)
    op.create_table(
        "ledger_balance",
        sa.Column("account", sa.String(length=100), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("data_class", sa.String(length=32), server_default="receipt", nullable=False),
        sa.CheckConstraint("data_class = 'receipt'", name=op.f("ck_ledger_balance_data_class")),
        sa.PrimaryKeyConstraint("account", name=op.f("pk_ledger_balance")),
    )
    op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.Column("data_class", sa.String(length=32), server_default="receipt", nullable=False),
        sa.CheckConstraint("data_class = 'receipt'", name=op.f("ck_ledger_head_data_class")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_head")),
    )
    op.create_table(
        "ledger_journal",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("debit", sa.String(length=100), nullable=False),
        sa.Column("credit", sa.String(length=100), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("receipt_hash", sa.String(length=64), nullable=True),
        sa.Column("memo", sa.String(length=500), nullable=False),
        sa.Column("recorded_ms", sa.BigInteger(), nullable=False),
        sa.Column("signer_key", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("data_class", sa.String(length=32), server_default="receipt", nullable=False),
        sa.CheckConstraint("data_class = 'receipt'", name=op.f("ck_ledger_journal_data_class")),
        sa.CheckConstraint("kind IN ('grant', 'settle')", name=op.f("ck_ledger_journal_kind")),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_ledger_journal_amount")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_journal")),
        sa.UniqueConstraint("entry_hash", name=op.f("uq_ledger_journal_entry_hash")),
        sa.UniqueConstraint("receipt_hash", name=op.f("uq_ledger_journal_receipt_hash")),
    )
    op.create_index(op.f("ix_ledger_journal_credit"), "ledger_journal", ["credit"], unique=False)
    op.create_index(op.f("ix_ledger_journal_debit"), "ledger_journal", ["debit"], unique=False)
    op.create_table(
        "ledger_receipt",
        sa.Column("receipt_hash", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("node_peer_id", sa.String(length=128), nullable=False),
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("payee", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("countersignature", sa.LargeBinary(), nullable=False),
        sa.Column("signer_key", sa.LargeBinary(), nullable=False),
        sa.Column("recorded_ms", sa.BigInteger(), nullable=False),
        sa.Column("data_class", sa.String(length=32), server_default="receipt", nullable=False),
        sa.CheckConstraint("data_class = 'receipt'", name=op.f("ck_ledger_receipt_data_class")),
        sa.PrimaryKeyConstraint("receipt_hash", name=op.f("pk_ledger_receipt")),
        sa.UniqueConstraint("job_id", name=op.f("uq_ledger_receipt_job_id")),
    )
    op.create_index(
        op.f("ix_ledger_receipt_node_peer_id"), "ledger_receipt", ["node_peer_id"], unique=False
    )
    op.create_table(
        "node_reputation",
        sa.Column("peer_id", sa.String(length=128), nullable=False),
        sa.Column("success", sa.Float(), nullable=False),
        sa.Column("ttft_s", sa.Float(), nullable=True),
        sa.Column("latency_s", sa.Float(), nullable=True),
        sa.Column("volume", sa.Float(), nullable=False),
        sa.Column("jobs", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column(
            "data_class", sa.String(length=32), server_default="node_manifest", nullable=False
        ),
        sa.CheckConstraint(
            "data_class = 'node_manifest'", name=op.f("ck_node_reputation_data_class")
        ),
        sa.PrimaryKeyConstraint("peer_id", name=op.f("pk_node_reputation")),
    )
    op.create_table(
        "account_usage",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column(
            "data_class", sa.String(length=32), server_default="request_metadata", nullable=False
        ),
        sa.CheckConstraint(
            "data_class = 'request_metadata'", name=op.f("ck_account_usage_data_class")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_account_usage_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "day", "model", name=op.f("pk_account_usage")),
    )
    op.create_index(
        op.f("ix_account_usage_created_ms"), "account_usage", ["created_ms"], unique=False
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=100), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_used_ms", sa.BigInteger(), nullable=True),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
        sa.Column("data_class", sa.String(length=32), server_default="api_key", nullable=False),
        sa.CheckConstraint("data_class = 'api_key'", name=op.f("ck_api_key_data_class")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_api_key_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_key_key_hash")),
    )
    op.create_index(op.f("ix_api_key_account_id"), "api_key", ["account_id"], unique=False)
    op.create_table(
        "session_family",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
        sa.Column(
            "data_class", sa.String(length=32), server_default="session_token", nullable=False
        ),
        sa.CheckConstraint(
            "data_class = 'session_token'", name=op.f("ck_session_family_data_class")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_session_family_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_family")),
    )
    op.create_index(
        op.f("ix_session_family_account_id"), "session_family", ["account_id"], unique=False
    )
    op.create_table(
        "session_token",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("family_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("used_ms", sa.BigInteger(), nullable=True),
        sa.Column(
            "data_class", sa.String(length=32), server_default="session_token", nullable=False
        ),
        sa.CheckConstraint(
            "data_class = 'session_token'", name=op.f("ck_session_token_data_class")
        ),
        sa.CheckConstraint("kind IN ('access', 'refresh')", name=op.f("ck_session_token_kind")),
        sa.ForeignKeyConstraint(
            ["family_id"],
            ["session_family.id"],
            name=op.f("fk_session_token_family_id_session_family"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_session_token_token_hash")),
    )
    op.create_index(
        op.f("ix_session_token_expires_ms"), "session_token", ["expires_ms"], unique=False
    )
    op.create_index(
        op.f("ix_session_token_family_id"), "session_token", ["family_id"], unique=False
    )


def downgrade() -> None:
    for table in _TABLES:  # dependents first; dropping a table drops its indexes
        op.drop_table(table)
