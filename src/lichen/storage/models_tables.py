"""Tables of the network's model catalog and of model uploads in progress.

A feature module of :mod:`lichen.storage.tables` (which imports it); the migration
is ``migrations/versions/0003_models.py`` (branch ``models``). Both tables hold the
privacy policy's ``model_file`` data class; the bytes themselves live in the
tracker's content-addressed chunk store (``<models dir>/.chunks``), and deleting
a row garbage-collects the chunks no other row names.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from lichen.storage.tables import Base

MODEL_FILE_DATA = "model_file"
NAME_MAX = 64
DIGEST_MAX = 64


class NetworkModelRow(Base):
    """One model of the network catalog (signed and published by the tracker)."""

    __tablename__ = "network_model"
    __table_args__ = (CheckConstraint(f"data_class = '{MODEL_FILE_DATA}'", name="data_class"),)

    name: Mapped[str] = mapped_column(String(NAME_MAX), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(DIGEST_MAX))
    size: Mapped[int] = mapped_column(BigInteger)  # 0 until a pull-through fetch learns it
    filename: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(Text)  # shown: pypi:..., URL, file URI, "upload"
    source_spec: Mapped[str] = mapped_column(Text)  # JSON: how the tracker fetches it
    license: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    context: Mapped[int] = mapped_column(Integer, default=0)
    capabilities: Mapped[str] = mapped_column(String(200), default="")  # comma-separated
    chunk_size: Mapped[int] = mapped_column(Integer, default=0)
    chunks: Mapped[str] = mapped_column(Text, default="")  # concatenated hex SHA-256s
    cached: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    owner: Mapped[str] = mapped_column(String(64), default="")  # uploader's account id
    created_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    data_class: Mapped[str] = mapped_column(
        String(32), default=MODEL_FILE_DATA, server_default=MODEL_FILE_DATA
    )


class ModelUploadRow(Base):
    """An upload in progress: the declared file; received chunks are in the chunk store."""

    __tablename__ = "model_upload"
    __table_args__ = (CheckConstraint(f"data_class = '{MODEL_FILE_DATA}'", name="data_class"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(DIGEST_MAX))
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunks: Mapped[str] = mapped_column(Text)  # declared chunk SHA-256s, concatenated
    license: Mapped[str] = mapped_column(String(64), default="")
    created_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    data_class: Mapped[str] = mapped_column(
        String(32), default=MODEL_FILE_DATA, server_default=MODEL_FILE_DATA
    )


MODELS_DATA_CLASS: dict[str, str] = {
    NetworkModelRow.__tablename__: MODEL_FILE_DATA,
    ModelUploadRow.__tablename__: MODEL_FILE_DATA,
}
