"""Node reputation that the scheduler reads: decaying success rate, latency, volume,
persisted so it survives restarts (docs/architecture.md section 7)."""

from __future__ import annotations

from lichen.reputation.book import (
    MIN_SCORE,
    EwmaReputation,
    NodeRecord,
    Reputation,
    ReputationBook,
)
from lichen.reputation.store import ReputationKeeper, ReputationStore

__all__ = [
    "MIN_SCORE",
    "EwmaReputation",
    "NodeRecord",
    "Reputation",
    "ReputationBook",
    "ReputationKeeper",
    "ReputationStore",
]
