"""membership: invites (their terms, never the token) and member devices.

Revision ID: 0002_membership
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_membership"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = ("membership",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invites",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("roles", sa.String(length=200), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), server_default="0", nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "data_class", sa.String(length=32), server_default="account_data", nullable=False
        ),
        sa.CheckConstraint("uses >= 0 AND max_uses >= 0", name=op.f("ck_invites_uses")),
        sa.CheckConstraint("data_class = 'account_data'", name=op.f("ck_invites_data_class")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invites")),
    )
    op.create_table(
        "members",
        sa.Column("peer_id", sa.String(length=128), nullable=False),
        sa.Column("device_key", sa.String(length=64), nullable=False),
        sa.Column("account_key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("trust", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("invite_id", sa.String(length=64), nullable=True),
        sa.Column("first_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column(
            "data_class", sa.String(length=32), server_default="account_data", nullable=False
        ),
        sa.CheckConstraint(
            "status IN ('approved', 'pending', 'revoked')", name=op.f("ck_members_status")
        ),
        sa.CheckConstraint("data_class = 'account_data'", name=op.f("ck_members_data_class")),
        sa.PrimaryKeyConstraint("peer_id", name=op.f("pk_members")),
    )
    op.create_index(op.f("ix_members_updated_ms"), "members", ["updated_ms"])


def downgrade() -> None:
    op.drop_index(op.f("ix_members_updated_ms"), table_name="members")
    op.drop_table("members")
    op.drop_table("invites")
