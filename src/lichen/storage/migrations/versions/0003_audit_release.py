"""audit release: the operator lifted a node's audit quarantine (who, when, why).

Revision ID: 0003_audit_release
Revises: 0002_audit
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_audit_release"
down_revision: str | None = "0002_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_releases",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("peer_id", sa.String(length=128), nullable=False),
        sa.Column("released_by", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column(
            "data_class", sa.String(length=32), server_default="node_manifest", nullable=False
        ),
        sa.CheckConstraint(
            "data_class = 'node_manifest'", name=op.f("ck_audit_releases_data_class")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_releases")),
    )
    op.create_index(op.f("ix_audit_releases_peer_id"), "audit_releases", ["peer_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_releases_peer_id"), table_name="audit_releases")
    op.drop_table("audit_releases")
