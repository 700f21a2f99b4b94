"""Metering: the usage the gateway settles for one answer, from what it streamed.

:class:`Meter` counts the completion text the client was sent with the model's
own tokenizer (:class:`~lichen.ledger.tokens.TokenCounter`, when this gateway has
the model file), bounds the node's claim with :func:`~lichen.ledger.charge.bound_charge`,
and reports a claim beyond what was streamed as :class:`TokenEvidence`:
metadata only (node, model, job, claimed and counted tokens), never text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lichen.gateway.completions import Outcome
from lichen.ledger.charge import Charge, bound_charge
from lichen.ledger.receipts import claimed_usage
from lichen.ledger.tokens import ModelFile, TokenCounter
from lichen.models.store import ModelStore
from lichen.wire.messages import Usage

__all__ = [
    "Meter",
    "TokenEvidence",
    "installed_model_file",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TokenEvidence:
    """A node claimed more tokens than the gateway streamed (metadata only)."""

    node: str
    model: str
    job_id: str
    claimed_prompt: int
    claimed_completion: int
    counted_completion: int | None  # None: no tokenizer here, bounded by bytes streamed
    charged_prompt: int
    charged_completion: int


class Meter:
    def __init__(
        self,
        *,
        tokens: TokenCounter | None = None,
        on_evidence: Callable[[TokenEvidence], None] | None = None,
    ) -> None:
        self.tokens = tokens
        self.on_evidence = on_evidence

    async def measure(self, outcome: Outcome) -> Charge:
        """The usage to settle and count for ``outcome``; logs evidence of inflation."""
        if outcome.kind == "embedding":
            return _embedding_charge(outcome)
        counted = None
        if self.tokens is not None and outcome.model:
            # Off the event loop: the first use of a model reads its GGUF header.
            counted = await asyncio.to_thread(
                self.tokens.count, outcome.model, outcome.completion_text
            )
        context = outcome.node_context  # what the serving node declared for the model
        # The claim that would be paid: the signed receipt's, else the final usage.
        claimed = claimed_usage(outcome.receipt) or outcome.usage
        charge = bound_charge(
            claimed=claimed,
            text=outcome.completion_text,
            counted=counted,
            context=context,
        )
        if charge.clamped and outcome.node:
            evidence = TokenEvidence(
                node=outcome.node,
                model=outcome.model,
                job_id=outcome.job_id,
                claimed_prompt=claimed.prompt_tokens,
                claimed_completion=claimed.completion_tokens,
                counted_completion=counted,
                charged_prompt=charge.usage.prompt_tokens,
                charged_completion=charge.usage.completion_tokens,
            )
            log.warning(
                "token claim clamped: node %s job %s model %s claimed %d+%d tokens, "
                "counted %s completion tokens (%s), charged %d+%d",
                evidence.node,
                evidence.job_id,
                evidence.model,
                evidence.claimed_prompt,
                evidence.claimed_completion,
                "-" if counted is None else counted,
                charge.method,
                evidence.charged_prompt,
                evidence.charged_completion,
            )
            if self.on_evidence is not None:
                self.on_evidence(evidence)
        return charge


def _embedding_charge(outcome: Outcome) -> Charge:
    """Embeddings: the usage the router checked against the inputs (a token is at
    least one byte of input, :func:`~lichen.tracker.output.vectors_problem`); a receipt
    claiming more is paid that checked usage, never its own claim. No completion."""
    claimed = claimed_usage(outcome.receipt) or outcome.usage
    prompt = min(max(0, claimed.prompt_tokens), outcome.usage.prompt_tokens)
    usage = Usage(prompt, 0)
    return Charge(usage=usage, claimed=claimed, counted=None, clamped=usage != claimed)


def installed_model_file(models_path: Path) -> ModelFile:
    """Model name -> its GGUF file in this machine's model store (None if not installed)."""
    store = ModelStore(models_path)

    def model_file(model: str) -> Path | None:
        installed = store.get(model)
        return installed.path if installed is not None else None

    return model_file
