"""Real answers through the gateway reach the traffic audits, as the policy allows.

A real tracker and gateway on loopback, a scripted node over the real wire; the
reference is a recording double (the e2e tests use the real one). What the verifier
gets must be exactly the request and the tokens the node produced; the client's
answer is unchanged and never waits for the audit; no text reaches the logs.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import pytest
from fakes import ANSWER, MODEL, FakeEngine, LocalNetwork

from lichen.audit.auditor import Auditor
from lichen.audit.book import AuditBook
from lichen.audit.probes import TrafficShapes
from lichen.audit.rescoring import Rescored, TokenScore
from lichen.audit.traffic import TrafficAudits
from lichen.privacy.policy import AuditRules, Policy, load_preset
from lichen.wire.messages import GenerationRequest

CANARY = "canary-prompt-5d1e"
BAD = TokenScore("Hello", -9.0, (("Yo", -0.1),))
END = TokenScore("", -0.1, (("", -0.1),), eog=True)


@dataclass
class RecordingScorer:
    """Serves MODEL (any weights); records what it was asked to score; finds it implausible."""

    seen: list[tuple[GenerationRequest, str, list[str] | None]] = field(default_factory=list)

    def serves(self, model: str, sha256: str) -> bool:
        return model == MODEL

    async def rescore(
        self, request: GenerationRequest, text: str, pieces: list[str] | None = None
    ) -> Rescored:
        self.seen.append((request, text, pieces))
        return Rescored((BAD, END), prompt_tokens=5, complete=True)


def policy(share: float, trust: str = "owner") -> Policy:
    base = load_preset("private")
    return base.model_copy(update={"audits": AuditRules(traffic_share=share, verifier_trust=trust)})


def tap(
    net: LocalNetwork, share: float, trust: str = "owner"
) -> tuple[TrafficAudits, AuditBook, TrafficShapes]:
    """Traffic audits on ``net``'s gateway, as ``lichen.roles.tracker`` wires them."""
    book = AuditBook()
    shapes = TrafficShapes()

    def claimed(peer_id: str, model: str) -> str | None:
        conn = net.tracker.registry.get(peer_id)
        infos = conn.state.manifest.models if conn is not None else []
        return next((m.sha256 for m in infos if m.name == model), None)

    traffic = TrafficAudits(
        Auditor(RecordingScorer(), book),
        lambda: policy(share, trust),
        claimed=claimed,
        observe=shapes.observe,
        rng=random.Random(5),
    )
    net.completions.audits = traffic
    return traffic, book, shapes


async def chat(net: LocalNetwork, *, stream: bool = False, **extra: object) -> str:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Say hello ({CANARY})"}],
        "temperature": 0,
        "stream": stream,
        **extra,
    }
    response = await net.client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.text


async def test_a_sampled_answer_is_rescored_exactly_as_the_node_produced_it(
    net: LocalNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    traffic, book, shapes = tap(net, share=1.0)
    node = await net.add_node(FakeEngine(), "alpha")
    for stream in (False, True):
        text = await chat(net, stream=stream)
        assert "scripted" in text  # the client's answer is unchanged
    await traffic.join()
    scorer = traffic.auditor.scorer
    assert isinstance(scorer, RecordingScorer)
    request, text, pieces = scorer.seen[0]
    assert text == "".join(ANSWER) and pieces == ANSWER  # the node's own token split
    assert request.messages[-1].content == f"Say hello ({CANARY})"
    record = book.node(node.peer_id)
    assert record is not None and record.audits == 2 and record.failures == 2
    assert record.quarantined  # two failed audits of real answers
    assert all(e.source == "traffic" and e.probe_id == "" for e in record.recent)
    # the private preset stores no completions: the evidence keeps no token text
    assert all(f.claimed == "" for e in record.recent for f in e.findings)
    assert len(shapes) == 2  # probes imitate the traffic's sampling shapes (numbers only)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert CANARY not in logged and "scripted" not in logged


async def test_no_audit_where_the_policy_does_not_allow_it(net: LocalNetwork) -> None:
    off, off_book, shapes = tap(net, share=0.0)
    await net.add_node(FakeEngine(), "alpha")
    await chat(net)
    await off.join()
    assert off.submitted == 0 and off_book.snapshot() == {}
    assert len(shapes) == 1  # the shape is still observed: numbers only
    hidden, hidden_book, _ = tap(net, share=1.0, trust="outsider")  # class not for the verifier
    await chat(net)
    await hidden.join()
    assert hidden.submitted == 0 and hidden_book.snapshot() == {}


async def test_answers_that_cannot_be_judged_are_not_audited(net: LocalNetwork) -> None:
    traffic, book, _ = tap(net, share=1.0)
    await net.add_node(FakeEngine(model="other-model"), "beta")  # not the reference's model
    body = {"model": "other-model", "messages": [{"role": "user", "content": "hi"}]}
    assert (await net.client.post("/v1/chat/completions", json=body)).status_code == 200
    await net.add_node(FakeEngine(), "alpha")
    await chat(net, presence_penalty=0.5)  # penalties: the method cannot judge
    await traffic.join()
    assert traffic.submitted == 0 and book.snapshot() == {}
