"""operators: a role on accounts (user | operator) and the log of admin API writes.

Revision ID: 0003_operators
Revises: 0002_accounts (it changes the account table that revision created; branch
label "operators" on top of the accounts branch)
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_operators"
down_revision: str | None = "0002_accounts"
branch_labels: str | Sequence[str] | None = ("operators",)
depends_on: str | Sequence[str] | None = None

_ROLES = "role IN ('user', 'operator')"
_CHECK = f"CONSTRAINT ck_account_role CHECK ({_ROLES})"


def upgrade() -> None:
    # Existing accounts become plain users; `lichen operator grant` promotes one. Never
    # batch mode on SQLite here: rebuilding `account` would drop it, and with foreign keys
    # on that cascades to every API key, session and usage row. ADD COLUMN keeps them.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"ALTER TABLE account ADD COLUMN role VARCHAR(16) DEFAULT 'user' NOT NULL {_CHECK}"
        )
    else:
        op.add_column(
            "account",
            sa.Column("role", sa.String(length=16), server_default="user", nullable=False),
        )
        op.create_check_constraint(op.f("ck_account_role"), "account", _ROLES)
    op.create_table(
        "operator_action",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("data_class", sa.String(length=32), server_default="account", nullable=False),
        sa.CheckConstraint("data_class = 'account'", name=op.f("ck_operator_action_data_class")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_action")),
    )
    op.create_index(
        op.f("ix_operator_action_created_ms"), "operator_action", ["created_ms"], unique=False
    )
    op.create_index(
        op.f("ix_operator_action_account_id"), "operator_action", ["account_id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("operator_action")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE account DROP COLUMN role")  # its own CHECK goes with it
    else:
        op.drop_constraint(op.f("ck_account_role"), "account", type_="check")
        op.drop_column("account", "role")
