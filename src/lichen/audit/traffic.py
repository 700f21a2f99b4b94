"""Audits of real requests, where the network policy allows them.

The policy's ``[audits] traffic_share`` says what share of real requests the
tracker's reference verifier may re-score, and only for privacy classes whose
allowed trust levels include the verifier's (``verifier_trust``): a class
reserved for other nodes is never shown to the verifier. The answer is audited
after it was delivered (the client never waits for it); the evidence keeps
token text only where the policy stores completions.

The gateway's answering service hands every routed answer's raw event stream
to :meth:`TrafficAudits.tap` (``CompletionService(audits=...)``): before the
privacy pipeline restores pseudonymized text, so the verifier sees exactly the
request and the tokens the node saw and produced. Whether a request is sampled
is decided before it is served; a sampled answer that one node produced whole
(no failover, no resume) is submitted when its finish arrives. Every request's
sampling shape (numbers only) feeds the probe factory, so probes keep looking
like the traffic the network really gets. The text is held in memory only while
it is audited, never logged or stored.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Callable

from lichen.audit.auditor import Answer, Auditor
from lichen.engines.base import Delta, EngineEvent, Finish
from lichen.privacy.policy import DataClass, Policy
from lichen.routing.router import RouteTrace
from lichen.wire.messages import GenerationRequest, SamplingParams

log = logging.getLogger(__name__)

MAX_QUEUED = 16  # audits waiting for the reference; more are dropped, never delayed

ClaimedWeights = Callable[[str, str], str | None]  # (peer id, model) -> the sha256 it claims


class TrafficAudits:
    """Samples real requests for re-scoring, as the policy allows."""

    def __init__(
        self,
        auditor: Auditor,
        policy: Callable[[], Policy],
        *,
        claimed: ClaimedWeights = lambda peer_id, model: None,
        observe: Callable[[SamplingParams], None] | None = None,
        rng: random.Random | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.auditor = auditor
        self._policy = policy
        self._claimed = claimed  # the weights a connected node claims for a model
        self._observe = observe  # the probe factory's memory of traffic shapes
        self._rng = rng or random.Random()
        self._max_queued = max_queued
        self._tasks: set[asyncio.Task[object]] = set()
        self.submitted = 0
        self.dropped = 0
        self.skipped = 0  # sampled answers that could not be judged (failover, other weights)

    def sampled(self, request: GenerationRequest) -> bool:
        """Whether to audit this request's answer (decided before it is served)."""
        policy = self._policy()
        share = policy.audit_share(request.privacy_class or policy.default_privacy_class)
        if share <= 0 or self._rng.random() >= share:
            return False
        # Any weights of the model for now ("" matches all); the node's claim is checked at the end.
        return self.auditor.can_audit(request, "")

    def tap(
        self,
        request: GenerationRequest,
        trace: RouteTrace,
        events: AsyncGenerator[EngineEvent, None],
    ) -> AsyncGenerator[EngineEvent, None]:
        """``events`` unchanged; if the request is sampled, its answer is audited."""
        if self._observe is not None:
            self._observe(request.params)
        if not self.sampled(request):
            return events
        return self._collect(request, trace, events)

    async def _collect(
        self,
        request: GenerationRequest,
        trace: RouteTrace,
        events: AsyncGenerator[EngineEvent, None],
    ) -> AsyncGenerator[EngineEvent, None]:
        pieces: list[str] = []
        try:
            async for event in events:
                if isinstance(event, Delta):
                    pieces.append(event.text)
                elif isinstance(event, Finish):
                    self._finished(request, trace, pieces, event)
                yield event
        finally:
            await events.aclose()

    def _finished(
        self, request: GenerationRequest, trace: RouteTrace, pieces: list[str], finish: Finish
    ) -> None:
        nodes = set(trace.nodes)
        if len(nodes) != 1 or trace.resumes or finish.finish_reason not in ("stop", "length"):
            self.skipped += 1  # several nodes wrote this answer: no one claim to judge
            return
        (peer_id,) = nodes
        sha256 = self._claimed(peer_id, request.model)
        if not sha256 or not self.auditor.can_audit(request, sha256):
            self.skipped += 1
            return
        answer = Answer("".join(pieces), finish.usage, finish.finish_reason, tuple(pieces))
        self.submit(peer_id, request, answer)

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
