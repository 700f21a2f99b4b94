"""privacy: prompts and answers kept by policy (dataset log, public feed) and telemetry.

Revision ID: 0002_privacy
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_privacy"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = ("privacy",)
depends_on: str | Sequence[str] | None = None

_big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _content_table(name: str, data_class: str, *extra: sa.Column[object]) -> None:
    op.create_table(
        name,
        sa.Column("id", _big_id, nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=True),
        sa.Column("deletion_hash", sa.String(length=64), nullable=False),
        sa.Column("public", sa.Boolean(), server_default=sa.false(), nullable=False),
        *extra,
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("data_class", sa.String(length=32), server_default=data_class, nullable=False),
        sa.CheckConstraint(f"data_class = '{data_class}'", name=op.f(f"ck_{name}_data_class")),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
    )
    op.create_index(op.f(f"ix_{name}_request_id"), name, ["request_id"], unique=True)
    op.create_index(op.f(f"ix_{name}_created_ms"), name, ["created_ms"])
    op.create_index(op.f(f"ix_{name}_subject"), name, ["subject"])


def upgrade() -> None:
    _content_table(
        "prompt_log",
        "prompt",
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
    )
    _content_table(
        "completion_log",
        "completion",
        sa.Column("finish_reason", sa.String(length=32), nullable=False),
    )
    op.create_table(
        "telemetry_log",
        sa.Column("id", _big_id, nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("peer_id", sa.String(length=128), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=True),
        sa.Column("tokens", sa.BigInteger(), nullable=True),
        sa.Column("tokens_per_s", sa.Float(), nullable=True),
        sa.Column("models", sa.String(length=1000), nullable=True),
        sa.Column("uptime_s", sa.BigInteger(), nullable=True),
        sa.Column("data_class", sa.String(length=32), server_default="telemetry", nullable=False),
        sa.CheckConstraint("data_class = 'telemetry'", name=op.f("ck_telemetry_log_data_class")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telemetry_log")),
    )
    op.create_index(op.f("ix_telemetry_log_created_ms"), "telemetry_log", ["created_ms"])


def downgrade() -> None:
    op.drop_index(op.f("ix_telemetry_log_created_ms"), table_name="telemetry_log")
    op.drop_table("telemetry_log")
    for name in ("completion_log", "prompt_log"):
        for column in ("subject", "created_ms", "request_id"):
            op.drop_index(op.f(f"ix_{name}_{column}"), table_name=name)
        op.drop_table(name)
