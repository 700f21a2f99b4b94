"""What a request is charged: the gateway's own count, never the node's claim alone.

:func:`bound_charge` turns a node's claimed usage and what the gateway actually
streamed into the usage that is settled (and counted against quotas):

- **completion tokens**: with the model's tokenizer (:mod:`lichen.ledger.tokens`),
  the count of the text streamed to the client. A node may claim a little more
  than that count (llama.cpp counts the end-of-generation token the client never
  sees, and sampled token sequences can re-tokenize shorter; measured gap 0-4
  tokens), so up to :func:`tolerance` more is accepted;
  a claim beyond that is charged exactly the count and reported as evidence.
  Without a tokenizer (the
  gateway has no copy of the model), the node's claim bounded by the UTF-8 bytes
  streamed (a token is at least one byte of text) plus the tolerance.
- **prompt tokens**: the node's claim, bounded by the model's context size (from
  the node's manifest, capped at :data:`MAX_CONTEXT`), and together with the
  completion by the context as well.

The result never exceeds what was streamed (plus the tolerance) and the context
window, so a receipt claiming ``10**12`` tokens is charged for what the client got.
"""

from __future__ import annotations

from dataclasses import dataclass

from lichen.wire.messages import Usage

__all__ = ["DEFAULT_CONTEXT", "MAX_CONTEXT", "Charge", "bound_charge", "tolerance"]

MAX_CONTEXT = 1 << 20  # no model's context is larger; a manifest saying more is capped
DEFAULT_CONTEXT = 1 << 17  # when the serving node's manifest gives no context size
# Measured (bench/token_counts.py, SmolLM2, temperature 0.8, 80 answers): llama.cpp's
# count minus the gateway's was 0 (27), 1 (48: the end token), 2 (3), 4 (2: sampled
# tokenizations that re-tokenize shorter). 2 tokens + 5 % leaves a margin above that.
TOLERANCE_TOKENS = 2
TOLERANCE_RATIO = 0.05


def tolerance(counted: int) -> int:
    """Tokens a node may claim beyond the gateway's count before it is evidence."""
    return TOLERANCE_TOKENS + int(counted * TOLERANCE_RATIO)


@dataclass(frozen=True, slots=True)
class Charge:
    usage: Usage  # what is settled and counted against quotas
    claimed: Usage  # what the node said (its receipt / final usage)
    counted: int | None  # completion tokens counted by the gateway (None: no tokenizer)
    clamped: bool  # the claim exceeded what was streamed (+ tolerance) or the context

    @property
    def method(self) -> str:
        return "counted" if self.counted is not None else "bounded-claim"


def bound_charge(*, claimed: Usage, text: str, counted: int | None, context: int) -> Charge:
    """The usage to settle for one answer (see the module docstring)."""
    window = min(context, MAX_CONTEXT) if context > 0 else DEFAULT_CONTEXT
    claim_prompt = max(0, claimed.prompt_tokens)
    claim_completion = max(0, claimed.completion_tokens)
    if counted is not None:
        # Within the tolerance, the node's own count (it may include the end token);
        # beyond it, the node is inflating and gets exactly what was counted.
        within = claim_completion <= counted + tolerance(counted)
        completion = max(counted, claim_completion) if within else counted
    else:
        streamed_bytes = len(text.encode("utf-8"))
        ceiling = streamed_bytes + tolerance(streamed_bytes)
        completion = min(claim_completion, ceiling)
    completion = min(completion, window)
    prompt = min(claim_prompt, window - completion)
    clamped = completion < claim_completion or prompt < claim_prompt
    return Charge(
        usage=Usage(prompt, completion),
        claimed=claimed,
        counted=counted,
        clamped=clamped,
    )
