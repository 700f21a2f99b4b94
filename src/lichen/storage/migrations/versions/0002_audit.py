"""audit: one row per audit of a node, with its verdict and token-level evidence.

Revision ID: 0002_audit
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_audit"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = ("audit",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("peer_id", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("probe_id", sa.String(length=32), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("positions", sa.Integer(), nullable=False),
        sa.Column("max_margin", sa.Float(), nullable=False),
        sa.Column("z", sa.Float(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column(
            "data_class", sa.String(length=32), server_default="node_manifest", nullable=False
        ),
        sa.CheckConstraint("source IN ('probe', 'traffic')", name=op.f("ck_audit_records_source")),
        sa.CheckConstraint(
            "data_class = 'node_manifest'", name=op.f("ck_audit_records_data_class")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_records")),
    )
    op.create_index(op.f("ix_audit_records_created_ms"), "audit_records", ["created_ms"])
    op.create_index(op.f("ix_audit_records_peer_id"), "audit_records", ["peer_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_records_peer_id"), table_name="audit_records")
    op.drop_index(op.f("ix_audit_records_created_ms"), table_name="audit_records")
    op.drop_table("audit_records")
