"""Sampling real traffic for audits (as the policy allows), the auditor's two splits, probes."""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import pytest

from lichen.audit.auditor import Answer, Auditor
from lichen.audit.book import AuditBook
from lichen.audit.probes import ProbeFactory, TrafficShapes, load_probes
from lichen.audit.rescoring import Rescored, TokenScore
from lichen.audit.scheduler import MIN_INTERVAL_S, ProbeScheduler
from lichen.audit.traffic import TrafficAudits
from lichen.engines.base import Delta, EngineEvent, Finish
from lichen.privacy.policy import AuditRules, Policy, load_preset, parse_policy, preset_text
from lichen.privacy.summary import policy_text
from lichen.routing.router import RouteTrace
from lichen.wire.messages import ChatMessage, GenerationRequest, ModelInfo, SamplingParams, Usage

MODEL = "m"
SHA = "a" * 64
GOOD = TokenScore("Hi", -0.1, (("Hi", -0.1), ("Yo", -3.0)))
BAD = TokenScore("Hi", -9.0, (("Yo", -0.1), ("Hey", -3.0)))
END = TokenScore("", -0.1, (("", -0.1),), eog=True)


@dataclass
class FakeScorer:
    """Scores the node's split as ``split`` and the text split as ``text``."""

    split: TokenScore = GOOD
    text: TokenScore = GOOD
    calls: list[bool] = field(default_factory=list)

    def serves(self, model: str, sha256: str) -> bool:
        return model == MODEL and sha256 in ("", SHA)

    async def rescore(
        self, request: GenerationRequest, text: str, pieces: list[str] | None = None
    ) -> Rescored:
        self.calls.append(pieces is not None)
        first = self.split if pieces is not None else self.text
        return Rescored((first, END), prompt_tokens=10, complete=True)


def request(privacy_class: str = "standard", **params: object) -> GenerationRequest:
    return GenerationRequest(
        kind="chat",
        model=MODEL,
        messages=[ChatMessage(role="user", content="hello")],
        params=SamplingParams(temperature=0.0, max_tokens=8, **params),  # type: ignore[arg-type]
        privacy_class=privacy_class,
    )


ANSWER = Answer("Hi", Usage(10, 2), "stop", ("Hi",))


def policy(share: float, trust: str = "owner") -> Policy:
    base = load_preset("private")
    return base.model_copy(update={"audits": AuditRules(traffic_share=share, verifier_trust=trust)})


def test_the_policy_limits_traffic_audits_to_classes_the_verifier_may_see() -> None:
    assert load_preset("private").audit_share("standard") == 0.0
    p = policy(0.25)
    assert p.audit_share("standard") == 0.25
    assert policy(0.25, trust="outsider").audit_share("standard") == 0.0
    assert p.audit_share("no-such-class") == 0.0
    text = preset_text("private") + "\n[audits]\ntraffic_share = 0.05\n"
    assert parse_policy(text).audits.traffic_share == 0.05
    with pytest.raises(Exception):  # noqa: B017 - the policy's own typed error
        parse_policy(preset_text("private") + "\n[audits]\ntraffic_share = 2\n")
    assert "never re-checked" in policy_text(load_preset("private"))
    assert "re-scored" in policy_text(p)


async def _events(*events: EngineEvent) -> AsyncGenerator[EngineEvent, None]:
    for event in events:
        yield event


async def _drain(events: AsyncGenerator[EngineEvent, None]) -> list[EngineEvent]:
    return [event async for event in events]


ANSWERED = (Delta("Hi"), Finish("stop", Usage(10, 2)))


async def test_traffic_audits_sample_as_the_policy_says_and_keep_no_text() -> None:
    book = AuditBook()
    scorer = FakeScorer(split=BAD, text=BAD)
    traffic = TrafficAudits(
        Auditor(scorer, book),
        lambda: policy(1.0),
        claimed=lambda peer, model: SHA,
        rng=random.Random(1),
    )
    assert traffic.sampled(request())
    assert not traffic.sampled(request(tools='[{"type": "function"}]'))  # cannot be judged
    assert not TrafficAudits(Auditor(scorer, book), lambda: policy(0.0)).sampled(request())
    # the class allows no node of the verifier's trust level: never sampled
    assert not TrafficAudits(Auditor(scorer, book), lambda: policy(1.0, "outsider")).sampled(
        request()
    )
    assert await _drain(traffic.tap(request(), RouteTrace(["lp-n"]), _events(*ANSWERED))) == list(
        ANSWERED
    )
    await traffic.join()
    record = book.node("lp-n")
    assert record is not None and record.failures == 1 and traffic.submitted == 1
    (entry,) = record.recent
    assert entry.source == "traffic"
    assert all(f.claimed == "" and f.reference == "" for f in entry.findings)


async def test_answers_the_method_cannot_judge_are_skipped_not_failed() -> None:
    book = AuditBook()
    scorer = FakeScorer(split=BAD, text=BAD)
    other_weights = TrafficAudits(
        Auditor(scorer, book), lambda: policy(1.0), claimed=lambda peer, model: "b" * 64
    )
    await _drain(other_weights.tap(request(), RouteTrace(["lp-n"]), _events(*ANSWERED)))
    gone = TrafficAudits(Auditor(scorer, book), lambda: policy(1.0))  # node left: no claim
    await _drain(gone.tap(request(), RouteTrace(["lp-n"]), _events(*ANSWERED)))
    both = TrafficAudits(Auditor(scorer, book), lambda: policy(1.0), claimed=lambda p, m: SHA)
    await _drain(both.tap(request(), RouteTrace(["lp-a", "lp-b"], resumes=1), _events(*ANSWERED)))
    cut = (Delta("Hi"),)  # the stream ended without a finish (client left, node failed)
    await _drain(both.tap(request(), RouteTrace(["lp-a"]), _events(*cut)))
    assert (other_weights.skipped, gone.skipped, both.skipped) == (1, 1, 1)
    assert both.submitted == 0 and scorer.calls == [] and book.snapshot() == {}


async def test_full_queue_drops_traffic_audits_instead_of_waiting() -> None:
    traffic = TrafficAudits(Auditor(FakeScorer(), AuditBook()), lambda: policy(1.0), max_queued=0)
    assert not traffic.submit("lp-n", request(), ANSWER) and traffic.dropped == 1


async def test_the_auditor_passes_an_answer_if_either_split_is_plausible() -> None:
    scorer = FakeScorer(split=BAD, text=GOOD)
    auditor = Auditor(scorer, AuditBook())
    assert (await auditor.judge(request(), ANSWER)).passed
    assert scorer.calls == [True, False]
    both_bad = Auditor(FakeScorer(split=BAD, text=BAD), AuditBook())
    assert not (await both_bad.judge(request(), ANSWER)).passed
    good_first = FakeScorer()
    assert (await Auditor(good_first, AuditBook()).judge(request(), ANSWER)).passed
    assert good_first.calls == [True]  # no second pass needed


def test_probes_ship_with_lichen_and_look_like_traffic() -> None:
    probes = load_probes()
    assert len(probes) >= 40 and len({p.id for p in probes}) == len(probes)
    shapes = TrafficShapes()
    factory = ProbeFactory(probes, shapes=shapes, rng=random.Random(3))
    made = [factory.make(MODEL, privacy_class="standard")[1] for _ in range(200)]
    assert {r.params.temperature for r in made} >= {0.0, 0.7}
    assert all(r.kind == "chat" and r.privacy_class == "standard" for r in made)
    # Once real traffic was seen, probes imitate its shapes (numbers only).
    shapes.observe(SamplingParams(temperature=0.3, max_tokens=77))
    _, probe = factory.make(MODEL)
    assert (probe.params.temperature, probe.params.max_tokens) == (0.3, 77)


@dataclass
class _Manifest:
    models: list[ModelInfo]


@dataclass
class _State:
    manifest: _Manifest
    tokens_per_s: float = 40.0
    draining: bool = False


@dataclass
class _Conn:
    peer_id: str
    state: _State
    closed: bool = False


def test_probe_times_are_random_and_within_the_budget() -> None:
    now = [0.0]
    scheduler = ProbeScheduler(
        lambda: conns,  # type: ignore[arg-type, return-value]
        Auditor(FakeScorer(), AuditBook()),
        ProbeFactory(),
        budget=0.02,
        rng=random.Random(5),
        clock=lambda: now[0],
    )
    audited = _Conn("lp-a", _State(_Manifest([ModelInfo(name=MODEL, sha256=SHA, engine="x")])))
    other = _Conn("lp-b", _State(_Manifest([ModelInfo(name="other", sha256="", engine="x")])))
    conns = [audited, other]
    interval = scheduler.mean_interval_s(audited)  # type: ignore[arg-type]
    assert interval == pytest.approx(64 / (0.02 * 40.0)) and interval >= MIN_INTERVAL_S
    assert scheduler.due() == []  # first sight: a random first time is drawn
    fired = 0
    for step in range(1, 20_001):
        now[0] = step * 1.0
        fired += len(scheduler.due())
    # About one probe per mean interval (Poisson), and never for unaudited models.
    assert 0.7 * 20_000 / interval < fired < 1.3 * 20_000 / interval
    with pytest.raises(ValueError):
        ProbeScheduler(lambda: [], Auditor(FakeScorer(), AuditBook()), ProbeFactory(), budget=0)
