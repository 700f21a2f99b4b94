"""The table of node reputation (migration ``0002_accounts.py``, branch ``accounts``):
data about nodes, never about their users."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from lichen.storage.accounts_tables import NODE_MANIFEST_DATA, data_class_check, data_class_column
from lichen.storage.tables import PEER_ID_MAX, Base


class NodeReputationRow(Base):
    """Persisted reputation of one node: data about the node, never about its users."""

    __tablename__ = "node_reputation"
    __table_args__ = (data_class_check(NODE_MANIFEST_DATA),)

    peer_id: Mapped[str] = mapped_column(String(PEER_ID_MAX), primary_key=True)
    success: Mapped[float] = mapped_column(Float)  # decayed success rate, 0..1
    ttft_s: Mapped[float | None] = mapped_column(Float)  # EWMA time to first token
    latency_s: Mapped[float | None] = mapped_column(Float)  # EWMA whole-answer latency
    volume: Mapped[float] = mapped_column(Float)  # decayed tokens served
    jobs: Mapped[int] = mapped_column(BigInteger)  # all-time successes
    failures: Mapped[int] = mapped_column(BigInteger)  # all-time failures
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    data_class: Mapped[str] = data_class_column(NODE_MANIFEST_DATA)


REPUTATION_DATA_CLASS: dict[str, str] = {NodeReputationRow.__tablename__: NODE_MANIFEST_DATA}
