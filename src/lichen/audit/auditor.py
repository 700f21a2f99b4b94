"""One audit, end to end: an answer in, a recorded verdict out.

The :class:`Auditor` takes what a node answered (its text, its usage claim and
finish reason) to a request, has the reference re-score the text, judges it with
:func:`~lichen.audit.verifier.verify`, and records the verdict in the
:class:`~lichen.audit.book.AuditBook`, which forfeits, lowers reputation and
quarantines. Requests the method cannot judge (tools, structured output, a
resumed answer, a model the reference does not hold) are skipped, not failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lichen.audit.book import AuditBook, AuditEntry
from lichen.audit.rescoring import Rescored, Scorer
from lichen.audit.verifier import Thresholds, Verdict, verify
from lichen.errors import LichenError
from lichen.wire.messages import GenerationRequest, Usage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """What a node returned for one request (held only while it is audited)."""

    text: str
    usage: Usage
    finish_reason: str
    pieces: tuple[str, ...] = ()  # the streamed chunks (one token each from llama.cpp)


def auditable(request: GenerationRequest) -> bool:
    """Whether re-scoring can judge answers to ``request``."""
    p = request.params
    return not (
        p.tools
        or p.response_format
        or request.continuation
        or p.presence_penalty
        or p.frequency_penalty
    )


class Auditor:
    """Re-scores answers under the reference and records what it finds."""

    def __init__(
        self, scorer: Scorer, book: AuditBook, *, thresholds: Thresholds | None = None
    ) -> None:
        self.scorer = scorer
        self.book = book
        self.thresholds = thresholds or Thresholds()

    def can_audit(self, request: GenerationRequest, sha256: str) -> bool:
        return auditable(request) and self.scorer.serves(request.model, sha256)

    async def judge(self, request: GenerationRequest, answer: Answer) -> Verdict:
        """The verdict on ``answer``, without recording it.

        The answer is scored under the token split the node streamed; if that fails,
        under the split the reference itself prefers for the same text (a sampled
        answer's split can be one greedy forcing would never find). Either passing
        passes: the text is plausible if some split of it is. If both fail, the
        verdict on the node's own split stands (its counts are the node's claim).
        """
        first: Verdict | None = None
        if answer.pieces:
            first = self._verify(
                request,
                answer,
                await self.scorer.rescore(request, answer.text, list(answer.pieces)),
            )
            if first.passed:
                return first
        second = self._verify(request, answer, await self.scorer.rescore(request, answer.text))
        return second if second.passed or first is None else first

    def _verify(self, request: GenerationRequest, answer: Answer, rescored: Rescored) -> Verdict:
        return verify(
            request.params,
            rescored,
            usage=answer.usage,
            finish_reason=answer.finish_reason,
            thresholds=self.thresholds,
        )

    async def audit(
        self,
        *,
        peer_id: str,
        request: GenerationRequest,
        answer: Answer,
        source: str = "probe",
        probe_id: str = "",
        keep_tokens: bool = True,
    ) -> AuditEntry | None:
        """Judge and record one answer; None when the reference could not judge it."""
        try:
            verdict = await self.judge(request, answer)
        except LichenError as error:
            log.warning("audit of node %s skipped: %s", peer_id, error.code.value)
            return None
        return await self.book.record(
            peer_id=peer_id,
            model=request.model,
            verdict=verdict,
            source=source,
            probe_id=probe_id,
            keep_tokens=keep_tokens,
        )
