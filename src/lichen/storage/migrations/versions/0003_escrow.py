"""escrow: held settlements (ledger_escrow) and the journal's hold/release/forfeit entries.

Revision ID: 0003_escrow
Revises: 0002_accounts (it changes the ledger tables that revision created; branch
label "escrow" on top of the accounts branch)
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_escrow"
down_revision: str | None = "0002_accounts"
branch_labels: str | Sequence[str] | None = ("escrow",)
depends_on: str | Sequence[str] | None = None

_OLD_KINDS = "kind IN ('grant', 'settle')"
_NEW_KINDS = "kind IN ('grant', 'settle', 'hold', 'release', 'forfeit')"


def upgrade() -> None:
    # A receipt's hold and its release (or forfeit) both name it: unique -> index.
    with op.batch_alter_table("ledger_journal") as batch:
        batch.drop_constraint(op.f("ck_ledger_journal_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_ledger_journal_kind"), _NEW_KINDS)
        batch.drop_constraint(op.f("uq_ledger_journal_receipt_hash"), type_="unique")
        batch.create_index(op.f("ix_ledger_journal_receipt_hash"), ["receipt_hash"], unique=False)
    op.create_table(
        "ledger_escrow",
        sa.Column("receipt_hash", sa.String(length=64), nullable=False),
        sa.Column("node_peer_id", sa.String(length=128), nullable=False),
        sa.Column("payer", sa.String(length=100), nullable=False),
        sa.Column("payee", sa.String(length=100), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("hold_seq", sa.BigInteger(), nullable=False),
        sa.Column("due_ms", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("closed_seq", sa.BigInteger(), nullable=True),
        sa.Column("recorded_ms", sa.BigInteger(), nullable=False),
        sa.Column("data_class", sa.String(length=32), server_default="receipt", nullable=False),
        sa.CheckConstraint("data_class = 'receipt'", name=op.f("ck_ledger_escrow_data_class")),
        sa.CheckConstraint(
            "state IN ('pending', 'released', 'forfeited')", name=op.f("ck_ledger_escrow_state")
        ),
        sa.PrimaryKeyConstraint("receipt_hash", name=op.f("pk_ledger_escrow")),
    )
    for column in ("node_peer_id", "payee", "due_ms", "state"):
        op.create_index(op.f(f"ix_ledger_escrow_{column}"), "ledger_escrow", [column], unique=False)


def downgrade() -> None:
    op.drop_table("ledger_escrow")
    with op.batch_alter_table("ledger_journal") as batch:
        batch.drop_index(op.f("ix_ledger_journal_receipt_hash"))
        batch.create_unique_constraint(op.f("uq_ledger_journal_receipt_hash"), ["receipt_hash"])
        batch.drop_constraint(op.f("ck_ledger_journal_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_ledger_journal_kind"), _OLD_KINDS)
