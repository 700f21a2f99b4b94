"""Node reputation with memory: success rate, latency and volume, all decaying.

The one place node reputation is computed. The scheduler and router only see the
:class:`Reputation` protocol; :class:`ReputationBook` implements it and adds what a
ledger knows: how much a node has served (volume, in tokens) and how long whole answers
took. Every figure decays with time since the node was last observed, so an old
failure is forgiven and an old record stops vouching for a node:

- success: EWMA of 1 (finished) / 0 (failed), drifting back to ``prior``
  (half-life ``half_life_s``);
- ttft / latency: EWMAs of observed seconds;
- volume: tokens served, halving every ``volume_half_life_s``.

``score = success * (1 - volume_weight * exp(-volume / volume_scale))``: a node
with no track record keeps most of its prior, and one that has served a lot
earns the rest. New identities therefore start slightly behind proven ones (no
Sybil advantage) but are not starved. Rows are persisted by
:class:`~lichen.reputation.store.ReputationStore`. :class:`EwmaReputation` is the
same book without the volume term, on a monotonic clock: the scheduler's default
when no accounting runs.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Protocol

from lichen.clock import Clock, system_clock

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
class NodeRecord:
    """What is known about one node (also the persisted row)."""

    peer_id: str
    success: float  # decayed success rate, 0..1
    ttft_s: float | None  # EWMA time to first token
    latency_s: float | None  # EWMA whole-answer latency
    volume: float  # decayed tokens served
    jobs: int  # all-time successes
    failures: int  # all-time failures
    updated: float  # Unix seconds of the last observation


def _ewma(old: float | None, new: float, alpha: float) -> float:
    return new if old is None else old + alpha * (new - old)


class ReputationBook:
    def __init__(
        self,
        *,
        alpha: float = 0.2,
        prior: float = 0.9,
        half_life_s: float = 600.0,
        volume_half_life_s: float = 86_400.0,
        volume_scale: float = 2_000.0,
        volume_weight: float = 0.2,
        clock: Clock = system_clock,
    ) -> None:
        if not 0 < alpha <= 1 or not 0 < prior <= 1 or half_life_s <= 0:
            raise ValueError("alpha and prior must be in (0, 1], half_life_s positive")
        self._alpha = alpha
        self._prior = prior
        self._decay = math.log(2) / half_life_s
        self._volume_decay = math.log(2) / volume_half_life_s
        self._volume_scale = volume_scale
        self._volume_weight = volume_weight
        self._clock = clock
        self._records: dict[str, NodeRecord] = {}
        self._dirty: set[str] = set()

    def __len__(self) -> int:
        return len(self._records)

    # --- the scheduler's protocol -----------------------------------------------------

    def score(self, peer_id: str) -> float:
        record = self._records.get(peer_id)
        now = self._clock()
        success = self._prior if record is None else self._success_now(record, now)
        volume = 0.0 if record is None else self._volume_now(record, now)
        unproven = self._volume_weight * math.exp(-volume / self._volume_scale)
        return max(MIN_SCORE, success * (1.0 - unproven))

    def ttft_s(self, peer_id: str) -> float | None:
        record = self._records.get(peer_id)
        return None if record is None else record.ttft_s

    def job_succeeded(self, peer_id: str, ttft_s: float | None) -> None:
        record = self._observe(peer_id, 1.0)
        record.jobs += 1
        if ttft_s is not None and ttft_s >= 0:
            record.ttft_s = _ewma(record.ttft_s, ttft_s, self._alpha)

    def job_failed(self, peer_id: str) -> None:
        record = self._observe(peer_id, 0.0)
        record.failures += 1

    # --- what the gateway adds after an answer ----------------------------------------

    def served(self, peer_id: str, *, tokens: int, latency_s: float | None = None) -> None:
        """Volume (and whole-answer latency) of one finished answer."""
        now = self._clock()
        record = self._record(peer_id, now)
        record.volume = self._volume_now(record, now) + max(0, tokens)
        record.success = self._success_now(record, now)
        if latency_s is not None and latency_s >= 0:
            record.latency_s = _ewma(record.latency_s, latency_s, self._alpha)
        record.updated = now
        self._dirty.add(peer_id)

    def reliability(self, peer_id: str) -> float | None:
        """Share of ``peer_id``'s jobs that finished (all time; None before its first job).

        This is what people read as a node's reputation: a node that never failed shows
        100%. ``score`` also discounts new identities and forgets with time, which suits
        the scheduler but reads as an unexplained 80% on a node with a perfect record.
        """
        record = self._records.get(peer_id)
        if record is None or record.jobs + record.failures == 0:
            return None
        return record.jobs / (record.jobs + record.failures)

    def forget(self, peer_id: str) -> None:
        self._records.pop(peer_id, None)
        self._dirty.discard(peer_id)

    def get(self, peer_id: str) -> NodeRecord | None:
        return self._records.get(peer_id)

    # --- persistence --------------------------------------------------------------------

    def load(self, records: list[NodeRecord]) -> None:
        for record in records:
            self._records[record.peer_id] = record

    def take_dirty(self) -> list[NodeRecord]:
        """Copies of the records changed since the last call (for the store)."""
        dirty = [self._records[p] for p in sorted(self._dirty) if p in self._records]
        self._dirty.clear()
        return [dataclasses.replace(r) for r in dirty]

    # --- internals ----------------------------------------------------------------------

    def _record(self, peer_id: str, now: float) -> NodeRecord:
        record = self._records.get(peer_id)
        if record is None:
            record = self._records[peer_id] = NodeRecord(
                peer_id=peer_id,
                success=self._prior,
                ttft_s=None,
                latency_s=None,
                volume=0.0,
                jobs=0,
                failures=0,
                updated=now,
            )
        return record

    def _success_now(self, record: NodeRecord, now: float) -> float:
        weight = math.exp(-self._decay * max(0.0, now - record.updated))
        return self._prior + (record.success - self._prior) * weight

    def _volume_now(self, record: NodeRecord, now: float) -> float:
        return record.volume * math.exp(-self._volume_decay * max(0.0, now - record.updated))

    def _observe(self, peer_id: str, outcome: float) -> NodeRecord:
        now = self._clock()
        record = self._record(peer_id, now)
        current = self._success_now(record, now)
        record.volume = self._volume_now(record, now)
        record.success = current + self._alpha * (outcome - current)
        record.updated = now
        self._dirty.add(peer_id)
        return record


class EwmaReputation(ReputationBook):
    """Success rate and TTFT only (no volume term), on a monotonic clock.

    What the scheduler uses when no accounting runs: an old failure is forgiven and
    an old fast answer is forgotten (the success rate drifts back to ``prior``).
    """

    def __init__(
        self,
        *,
        alpha: float = 0.2,
        prior: float = 0.9,
        half_life_s: float = 600.0,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(
            alpha=alpha, prior=prior, half_life_s=half_life_s, volume_weight=0.0, clock=clock
        )
