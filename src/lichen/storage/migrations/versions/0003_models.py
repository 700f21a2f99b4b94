"""models: the network model catalog and model uploads in progress.

Revision ID: 0003_models
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_models"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = ("models",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "network_model",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_spec", sa.Text(), nullable=False),
        sa.Column("license", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("context", sa.Integer(), nullable=False),
        sa.Column("capabilities", sa.String(length=200), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.Text(), nullable=False),
        sa.Column("cached", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("data_class", sa.String(length=32), server_default="model_file", nullable=False),
        sa.CheckConstraint("data_class = 'model_file'", name=op.f("ck_network_model_data_class")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_network_model")),
    )
    op.create_index(
        op.f("ix_network_model_created_ms"), "network_model", ["created_ms"], unique=False
    )
    op.create_table(
        "model_upload",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.Text(), nullable=False),
        sa.Column("license", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("data_class", sa.String(length=32), server_default="model_file", nullable=False),
        sa.CheckConstraint("data_class = 'model_file'", name=op.f("ck_model_upload_data_class")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_upload")),
    )
    op.create_index(
        op.f("ix_model_upload_account_id"), "model_upload", ["account_id"], unique=False
    )
    op.create_index(
        op.f("ix_model_upload_created_ms"), "model_upload", ["created_ms"], unique=False
    )


def downgrade() -> None:
    op.drop_table("model_upload")
    op.drop_table("network_model")
