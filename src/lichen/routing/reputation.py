"""How much the scheduler trusts a node: a decaying success rate and measured TTFT.

This is the seam the ledger's full reputation (volume, spot checks) plugs into
later: the scheduler and router only see the :class:`Reputation` protocol.
:class:`EwmaReputation` is the built-in one: exponentially weighted moving
averages that drift back to a neutral prior when a node has not been observed
for a while, so an old failure is forgiven and an old fast answer is forgotten.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

MIN_SCORE = 0.05  # a node is never scored to zero: it can always earn its way back


class Reputation(Protocol):
    """What routing reads and reports about nodes."""

    def score(self, peer_id: str) -> float:
        """Trust in ``peer_id``, in ``(0, 1]``; higher is better."""
        ...

    def ttft_s(self, peer_id: str) -> float | None:
        """Recently observed time to first token, or None if unknown."""
        ...

    def job_succeeded(self, peer_id: str, ttft_s: float | None) -> None: ...

    def job_failed(self, peer_id: str) -> None: ...


@dataclass(slots=True)
class _Stats:
    success: float  # EWMA of 1 (success) / 0 (failure)
    ttft_s: float | None  # EWMA of observed TTFT
    updated: float  # clock() of the last observation


class EwmaReputation:
    """Per-node EWMAs with decay toward ``prior`` (half-life ``half_life_s``)."""

    def __init__(
        self,
        *,
        alpha: float = 0.2,
        prior: float = 0.9,
        half_life_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < alpha <= 1 or not 0 < prior <= 1 or half_life_s <= 0:
            raise ValueError("alpha and prior must be in (0, 1], half_life_s positive")
        self._alpha = alpha
        self._prior = prior
        self._decay = math.log(2) / half_life_s
        self._clock = clock
        self._stats: dict[str, _Stats] = {}

    def __len__(self) -> int:
        return len(self._stats)

    def _weight(self, stats: _Stats, now: float) -> float:
        """How much of the recorded value still counts (1 fresh, toward 0 when old)."""
        return math.exp(-self._decay * max(0.0, now - stats.updated))

    def score(self, peer_id: str) -> float:
        stats = self._stats.get(peer_id)
        if stats is None:
            return self._prior
        w = self._weight(stats, self._clock())
        return max(MIN_SCORE, self._prior + (stats.success - self._prior) * w)

    def ttft_s(self, peer_id: str) -> float | None:
        stats = self._stats.get(peer_id)
        if stats is None or stats.ttft_s is None:
            return None
        # An old measurement still beats no measurement; it only loses weight in success.
        return stats.ttft_s

    def job_succeeded(self, peer_id: str, ttft_s: float | None) -> None:
        stats = self._observe(peer_id, 1.0)
        if ttft_s is not None and ttft_s >= 0:
            stats.ttft_s = (
                ttft_s
                if stats.ttft_s is None
                else stats.ttft_s + self._alpha * (ttft_s - stats.ttft_s)
            )

    def job_failed(self, peer_id: str) -> None:
        self._observe(peer_id, 0.0)

    def forget(self, peer_id: str) -> None:
        self._stats.pop(peer_id, None)

    def _observe(self, peer_id: str, outcome: float) -> _Stats:
        now = self._clock()
        stats = self._stats.get(peer_id)
        if stats is None:
            stats = self._stats[peer_id] = _Stats(success=self._prior, ttft_s=None, updated=now)
        # Decay the old value toward the prior first, then blend in the new outcome.
        current = self._prior + (stats.success - self._prior) * self._weight(stats, now)
        stats.success = current + self._alpha * (outcome - current)
        stats.updated = now
        return stats
