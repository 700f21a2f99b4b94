"""Judging one answer against the reference: is it what the claimed model would have said?

The answer arrives as text, the node's usage claim and its finish reason; the
reference has re-scored the text position by position (:mod:`.rescoring`).
What an honest llama.cpp node can produce depends on the request's sampling:

- **greedy** (``temperature == 0``): every token is the reference's top token,
  except at near-ties, where llama.cpp's batch- and thread-dependent arithmetic
  may pick the runner-up. So each token must sit within ``greedy_margin`` nats
  of the reference's top token and among its ``greedy_rank`` best. Tolerated
  positions further than ``slip_margin`` below the top are counted as *slips*:
  honest nodes measured here never slip, so the audit book treats repeated
  slips as evidence (a node that diverges only at near-ties, e.g. with an
  injected system prompt, still drifts on every answer).
- **sampled**: llama.cpp's default sampler chain drops every token below
  ``min_p = 0.05`` of the best one (a margin of ``ln 20 = 3.0`` nats) before it
  samples, so no honest token sits further than ``sampled_margin`` below the
  top; and the answer's total surprise under the tempered distribution must be
  plausible: its z-score against the expected surprise stays under
  ``sampled_z``.
- **counts**: the node's claimed completion tokens may not exceed the tokens
  the reference counted in the text (plus the end-of-generation token that
  llama.cpp counts), beyond ``token_slack``; its prompt tokens must equal the
  reference's; a ``length`` finish must really be ``max_tokens`` long.

Thresholds are calibrated on honest nodes (docs/verification.md keeps the data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lichen.audit.rescoring import Rescored, TokenScore
from lichen.wire.messages import SamplingParams, Usage

DEFAULT_TEMPERATURE = 0.8  # llama.cpp's default when a request sets none


@dataclass(frozen=True)
class Thresholds:
    """Where an honest answer ends and evidence begins (see docs/verification.md)."""

    greedy_margin: float = 0.5  # nats below the reference's top token a greedy token may sit
    greedy_rank: int = 3  # ... and it must be among this many of the reference's best
    slip_margin: float = 0.02  # a greedy token further below the top than this is a "slip"
    sampled_margin: float = 4.5  # nats below the top a sampled token may sit (min_p 0.05 + slack)
    sampled_z: float = 6.0  # z-score of the answer's total surprise that counts as implausible
    token_slack: int = 1  # claimed completion tokens beyond the re-count tolerated (re-splits)
    sampled_token_slack: float = 0.1  # extra tolerance for sampled answers, share of the count


@dataclass(frozen=True)
class Finding:
    """One reason an answer failed, with the evidence (no text beyond single tokens)."""

    kind: str  # "token" | "likelihood" | "usage" | "prompt" | "truncated" | "unforceable"
    detail: str  # short, human-readable
    position: int = -1  # answer token index, -1 when not about one position
    claimed: str = ""  # the node's token at ``position``
    reference: str = ""  # the reference's top token at ``position``
    score: float = 0.0  # margin (nats), z-score or count difference


@dataclass(frozen=True)
class Verdict:
    """The outcome of one audit."""

    passed: bool
    findings: tuple[Finding, ...] = ()
    mode: str = "greedy"  # "greedy" | "sampled"
    positions: int = 0  # positions checked
    max_margin: float = 0.0  # worst distance below the reference's top (nats)
    z: float = 0.0  # sampled: z-score of the total surprise
    tokens: int = 0  # answer tokens the reference counted
    slips: int = 0  # greedy: tolerated positions below the top by more than ``slip_margin``
    stats: dict[str, float] = field(default_factory=dict)


def temperature_of(params: SamplingParams) -> float:
    return DEFAULT_TEMPERATURE if params.temperature is None else max(0.0, params.temperature)


def verify(
    params: SamplingParams,
    rescored: Rescored,
    *,
    usage: Usage,
    finish_reason: str,
    thresholds: Thresholds | None = None,
) -> Verdict:
    """Judge an answer that ``rescored`` re-scored under the reference."""
    th = thresholds or Thresholds()
    temp = temperature_of(params)
    mode = "greedy" if temp == 0.0 else "sampled"
    findings: list[Finding] = []
    if not rescored.complete:
        findings.append(Finding("unforceable", "the reference cannot produce this text"))
        return Verdict(False, tuple(findings), mode)
    checked = _positions(rescored, finish_reason, params)
    max_margin = max((t.margin for _, t in checked), default=0.0)
    z = 0.0
    slips = 0
    if mode == "greedy":
        findings.extend(_greedy_findings(checked, th))
        slips = sum(1 for _, t in checked if t.margin > th.slip_margin)
    else:
        findings.extend(_margin_findings(checked, th.sampled_margin))
        z = surprise_z(checked, temp)
        if z > th.sampled_z:
            findings.append(
                Finding("likelihood", "the answer is too unlikely under the claimed model", score=z)
            )
    findings.extend(_count_findings(params, rescored, usage, finish_reason, th, mode))
    return Verdict(
        passed=not findings,
        findings=tuple(findings),
        mode=mode,
        positions=len(checked),
        max_margin=max_margin,
        z=z,
        tokens=rescored.answer_tokens,
        slips=slips,
    )


def _positions(
    rescored: Rescored, finish_reason: str, params: SamplingParams
) -> list[tuple[int, TokenScore]]:
    """Answer positions to judge; the end-of-generation one only when the model itself stopped
    (not at ``max_tokens``, not at a client stop string)."""
    end_checked = finish_reason == "stop" and not params.stop
    return [(i, t) for i, t in enumerate(rescored.tokens) if not t.eog or end_checked]


def _greedy_findings(checked: list[tuple[int, TokenScore]], th: Thresholds) -> list[Finding]:
    for i, t in checked:
        if t.margin > th.greedy_margin or t.rank >= th.greedy_rank:
            return [_token_finding(i, t, "not what the claimed model picks greedily")]
    return []


def _margin_findings(checked: list[tuple[int, TokenScore]], limit: float) -> list[Finding]:
    for i, t in checked:
        if t.margin > limit:
            return [_token_finding(i, t, "a token the claimed model's sampler never offers")]
    return []


def _token_finding(i: int, t: TokenScore, detail: str) -> Finding:
    best = t.top[0][0] if t.top else ""
    return Finding(
        "token",
        detail,
        position=i,
        claimed="<end>" if t.eog else t.token,
        reference=best or "<end>",
        score=round(t.margin, 3),
    )


def surprise_z(checked: list[tuple[int, TokenScore]], temperature: float) -> float:
    """How surprising the answer is under the tempered reference, in standard deviations.

    Per position, the tempered distribution is built from the reported top tokens;
    the answer's surprise ``-log q(token)`` is compared with its expectation (the
    entropy) and variance. Honest samples give z around 0; text from another model
    or perturbed weights gives large positive z.
    """
    total = expected = variance = 0.0
    for _, t in checked:
        if not t.top:
            continue
        logits = [lp / temperature for _, lp in t.top]
        norm = _logsumexp(logits)
        logq = [x - norm for x in logits]
        h = -sum(math.exp(x) * x for x in logq)
        h2 = sum(math.exp(x) * x * x for x in logq)
        total += -(t.logprob / temperature - norm)
        expected += h
        variance += max(0.0, h2 - h * h)
    return (total - expected) / math.sqrt(variance + 1.0)


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _count_findings(
    params: SamplingParams,
    rescored: Rescored,
    usage: Usage,
    finish_reason: str,
    th: Thresholds,
    mode: str,
) -> list[Finding]:
    out: list[Finding] = []
    counted = rescored.answer_tokens
    slack = th.token_slack + (int(counted * th.sampled_token_slack) if mode == "sampled" else 0)
    if usage.reported:
        expected = counted + (1 if finish_reason == "stop" else 0)  # llama.cpp counts the end
        if usage.completion_tokens > expected + slack:
            out.append(
                Finding(
                    "usage",
                    f"claimed {usage.completion_tokens} completion tokens, the text has {counted}",
                    score=float(usage.completion_tokens - expected),
                )
            )
        if rescored.prompt_tokens and usage.prompt_tokens > rescored.prompt_tokens + th.token_slack:
            out.append(
                Finding(
                    "prompt",
                    f"claimed {usage.prompt_tokens} prompt tokens, the reference counts "
                    f"{rescored.prompt_tokens}",
                    score=float(usage.prompt_tokens - rescored.prompt_tokens),
                )
            )
    cap = params.max_tokens
    if finish_reason == "length" and cap is not None and counted + slack < cap:
        out.append(
            Finding(
                "truncated",
                f"finished for length after {counted} of {cap} tokens",
                score=float(cap - counted),
            )
        )
    return out
