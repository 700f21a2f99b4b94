"""The audit verdict rules on synthetic re-scorings (the real model is in tests/e2e)."""

from __future__ import annotations

import math

import pytest

from lichen.audit.rescoring import Rescored, TokenScore, gbnf_literal, parse_rescored
from lichen.audit.verifier import Thresholds, verify
from lichen.errors import LichenError
from lichen.wire.messages import SamplingParams, Usage

GREEDY = SamplingParams(max_tokens=16, temperature=0.0)
SAMPLED = SamplingParams(max_tokens=16, temperature=0.7)


def tok(token: str, logprob: float, *alts: tuple[str, float], eog: bool = False) -> TokenScore:
    """A position whose top list holds ``token`` (at ``logprob``) among ``alts``, best first."""
    top = sorted([(token, logprob), *alts], key=lambda x: -x[1])
    return TokenScore(token, logprob, tuple(top), eog)


def honest(n: int = 5, *, end: bool = True) -> Rescored:
    tokens = [tok(f"w{i}", -0.1, (f"a{i}", -2.5), (f"b{i}", -3.0)) for i in range(n)]
    if end:
        tokens.append(tok("", -0.05, ("x", -3.0), eog=True))
    return Rescored(tuple(tokens), prompt_tokens=20, complete=True)


def test_an_honest_greedy_answer_passes() -> None:
    verdict = verify(GREEDY, honest(), usage=Usage(20, 6), finish_reason="stop")
    assert verdict.passed, verdict.findings
    assert verdict.positions == 6 and verdict.tokens == 5


def test_a_greedy_near_tie_is_tolerated_but_a_clear_miss_is_not() -> None:
    tie = honest()
    tokens = list(tie.tokens)
    tokens[2] = TokenScore("w2", -0.75, (("a2", -0.70), ("w2", -0.75)))
    near = Rescored(tuple(tokens), 20, True)
    tolerated = verify(GREEDY, near, usage=Usage(20, 6), finish_reason="stop")
    assert tolerated.passed and tolerated.slips == 1
    assert verify(GREEDY, honest(), usage=Usage(20, 6), finish_reason="stop").slips == 0
    tokens[2] = TokenScore("zz", -6.0, (("a2", -0.1), ("b2", -2.0)))
    verdict = verify(
        GREEDY, Rescored(tuple(tokens), 20, True), usage=Usage(20, 6), finish_reason="stop"
    )
    assert not verdict.passed
    finding = verdict.findings[0]
    assert (finding.kind, finding.position, finding.claimed, finding.reference) == (
        "token",
        2,
        "zz",
        "a2",
    )
    assert finding.score == pytest.approx(5.9)


def test_appended_text_fails_where_the_model_would_have_stopped() -> None:
    tokens = list(honest(end=False).tokens)
    tokens.append(TokenScore(" Visit", -9.0, (("", -0.01), (".", -5.0))))
    tokens.append(tok("", -0.1, eog=True))
    verdict = verify(
        GREEDY, Rescored(tuple(tokens), 20, True), usage=Usage(20, 7), finish_reason="stop"
    )
    assert not verdict.passed and verdict.findings[0].position == 5


def test_the_end_is_not_judged_at_max_tokens_or_a_stop_string() -> None:
    tokens = [*honest(end=False).tokens, TokenScore("", -8.0, (("more", -0.1),), True)]
    rescored = Rescored(tuple(tokens), 20, True)
    capped = SamplingParams(max_tokens=5, temperature=0.0)
    assert verify(capped, rescored, usage=Usage(20, 5), finish_reason="length").passed
    stops = SamplingParams(max_tokens=16, temperature=0.0, stop=["\n"])
    assert verify(stops, rescored, usage=Usage(20, 6), finish_reason="stop").passed
    assert not verify(GREEDY, rescored, usage=Usage(20, 6), finish_reason="stop").passed


def test_inflated_usage_and_prompt_counts_fail() -> None:
    verdict = verify(GREEDY, honest(), usage=Usage(20, 60), finish_reason="stop")
    assert [f.kind for f in verdict.findings] == ["usage"]
    assert verdict.findings[0].score == 54
    verdict = verify(GREEDY, honest(), usage=Usage(200, 6), finish_reason="stop")
    assert [f.kind for f in verdict.findings] == ["prompt"]
    # An engine that reports no counts claims nothing.
    assert verify(GREEDY, honest(), usage=Usage(0, 0, reported=False), finish_reason="stop").passed


def test_a_length_finish_must_really_be_max_tokens_long() -> None:
    verdict = verify(GREEDY, honest(5, end=False), usage=Usage(20, 16), finish_reason="length")
    assert "truncated" in {f.kind for f in verdict.findings}


def test_sampled_tokens_outside_the_samplers_reach_fail() -> None:
    tokens = list(honest().tokens)
    tokens[1] = TokenScore("odd", -9.0, (("w1", -0.2), ("a1", -1.0)))
    verdict = verify(
        SAMPLED, Rescored(tuple(tokens), 20, True), usage=Usage(20, 6), finish_reason="stop"
    )
    assert not verdict.passed and verdict.mode == "sampled"


def test_sampled_likelihood_z_separates_plausible_from_unlikely() -> None:
    # Flat-ish positions where every token is offered: the margin rule cannot fire,
    # only the total surprise can.
    def pos(i: int, pick: int) -> TokenScore:
        top = [(f"t{i}_{j}", math.log(p)) for j, p in enumerate((0.6, 0.2, 0.1, 0.1))]
        return TokenScore(top[pick][0], top[pick][1], tuple(top))

    plausible = Rescored(tuple(pos(i, 0 if i % 3 else 1) for i in range(60)), 20, True)
    unlikely = Rescored(tuple(pos(i, 3) for i in range(60)), 20, True)
    th = Thresholds(sampled_margin=10.0)
    params = SamplingParams(max_tokens=60, temperature=1.0)
    ok = verify(params, plausible, usage=Usage(20, 60), finish_reason="length", thresholds=th)
    bad = verify(params, unlikely, usage=Usage(20, 60), finish_reason="length", thresholds=th)
    assert ok.passed and ok.z < 2
    assert not bad.passed and bad.z > th.sampled_z
    assert [f.kind for f in bad.findings] == ["likelihood"]


def test_text_the_reference_cannot_force_fails() -> None:
    rescored = Rescored((), 20, complete=False)
    verdict = verify(GREEDY, rescored, usage=Usage(20, 1), finish_reason="stop")
    assert [f.kind for f in verdict.findings] == ["unforceable"]


@pytest.mark.parametrize(
    ("text", "grammar"),
    [
        ("hi", 'root ::= "hi"'),
        ('a "q" \\', 'root ::= "a \\"q\\" \\\\"'),
        ("l1\nl2\t", 'root ::= "l1\\u000al2\\u0009"'),
        ("é😀", 'root ::= "\\u00e9\\U0001f600"'),
        ("", 'root ::= ""'),
    ],
)
def test_the_forcing_grammar_escapes_everything(text: str, grammar: str) -> None:
    assert gbnf_literal(text) == grammar


def test_parse_rescored_reads_llamacpp_logprobs_and_errors() -> None:
    payload = {
        "choices": [
            {
                "message": {"content": "Hi"},
                "logprobs": {
                    "content": [
                        {
                            "token": "Hi",
                            "bytes": [72, 105],
                            "logprob": -0.5,
                            "top_logprobs": [
                                {"token": "Hello", "logprob": -0.4},
                                {"token": "Hi", "logprob": -0.5},
                            ],
                        },
                        {"token": "", "bytes": [], "logprob": -0.1, "top_logprobs": []},
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 9},
    }
    rescored = parse_rescored(payload, "Hi")
    assert rescored.complete and rescored.prompt_tokens == 9 and rescored.answer_tokens == 1
    first, end = rescored.tokens
    assert first.rank == 1 and first.margin == pytest.approx(0.1)
    assert end.eog and not first.eog
    assert not parse_rescored(payload, "Hi there").complete
    with pytest.raises(LichenError):
        parse_rescored({"error": {"message": "boom"}}, "x")
