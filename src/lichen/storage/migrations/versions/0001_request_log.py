"""request_log: metadata of served requests (never their content).

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "request_log",
        sa.Column("id", _big_id, nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("ttft_ms", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("node_peer_id", sa.String(length=128), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column(
            "data_class", sa.String(length=32), server_default="request_metadata", nullable=False
        ),
        sa.CheckConstraint("kind IN ('chat', 'completion')", name=op.f("ck_request_log_kind")),
        sa.CheckConstraint(
            "data_class = 'request_metadata'", name=op.f("ck_request_log_data_class")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_log")),
    )
    op.create_index(op.f("ix_request_log_created_ms"), "request_log", ["created_ms"])


def downgrade() -> None:
    op.drop_index(op.f("ix_request_log_created_ms"), table_name="request_log")
    op.drop_table("request_log")
