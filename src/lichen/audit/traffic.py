"""Audits of real requests, where the network policy allows them.

The policy's ``[audits] traffic_share`` says what share of real requests the
tracker's reference verifier may re-score, and only for privacy classes whose
allowed trust levels include the verifier's (``verifier_trust``): a class
reserved for other nodes is never shown to the verifier. The answer is audited
after it was delivered (the client never waits for it); the evidence keeps
token text only where the policy stores completions.

The gateway calls :meth:`TrafficAudits.wants` before streaming and, for a
sampled request that one node answered whole, :meth:`submit` with the answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from lichen.audit.auditor import Answer, Auditor
from lichen.privacy.policy import DataClass, Policy
from lichen.wire.messages import GenerationRequest

log = logging.getLogger(__name__)

MAX_QUEUED = 16  # audits waiting for the reference; more are dropped, never delayed


class TrafficAudits:
    """Samples real requests for re-scoring, as the policy allows."""

    def __init__(
        self,
        auditor: Auditor,
        policy: Callable[[], Policy],
        *,
        rng: random.Random | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.auditor = auditor
        self._policy = policy
        self._rng = rng or random.Random()
        self._max_queued = max_queued
        self._tasks: set[asyncio.Task[object]] = set()
        self.submitted = 0
        self.dropped = 0

    def wants(self, request: GenerationRequest, sha256: str) -> bool:
        """Whether to audit this request's answer (decided before it is served)."""
        share = self._policy().audit_share(request.privacy_class or self._default_class())
        if share <= 0 or self._rng.random() >= share:
            return False
        return self.auditor.can_audit(request, sha256)

    def _default_class(self) -> str:
        return self._policy().default_privacy_class

    def submit(self, peer_id: str, request: GenerationRequest, answer: Answer) -> bool:
        """Audit ``answer`` in the background; False when too many are queued already."""
        if len(self._tasks) >= self._max_queued:
            self.dropped += 1
            return False
        keep_tokens = self._policy().stores(DataClass.COMPLETION)
        task = asyncio.create_task(
            self.auditor.audit(
                peer_id=peer_id,
                request=request,
                answer=answer,
                source="traffic",
                keep_tokens=keep_tokens,
            ),
            name="audit-traffic",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.submitted += 1
        return True

    async def join(self) -> None:
        """Wait for the audits already submitted."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
