"""Reputation EWMAs, the registry's per-model index, and sampled scheduling."""

from __future__ import annotations

import random

import pytest

from lichen.identity.signing import generate_key
from lichen.reputation.book import MIN_SCORE, EwmaReputation
from lichen.routing.scheduler import Scheduler
from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry
from node_kit import NoLink, offline_node

_ACCOUNT = generate_key()


def node(name: str, *models: str, slots: int = 2) -> NodeConnection:
    return offline_node(name, dict.fromkeys(models, slots), account=_ACCOUNT)


# --- reputation ---------------------------------------------------------------------------


def test_unknown_nodes_get_the_prior_and_no_ttft() -> None:
    rep = EwmaReputation(prior=0.9)
    assert rep.score("x") == 0.9 and rep.ttft_s("x") is None


def test_failures_lower_the_score_and_successes_raise_it() -> None:
    rep = EwmaReputation(alpha=0.5, prior=0.9, clock=lambda: 0.0)
    rep.job_failed("x")
    assert rep.score("x") == pytest.approx(0.45)
    rep.job_succeeded("x", 0.2)
    assert rep.score("x") == pytest.approx(0.725)
    for _ in range(50):
        rep.job_failed("x")
    assert rep.score("x") == MIN_SCORE  # never zero: a node can earn its way back


def test_scores_decay_back_to_the_prior() -> None:
    now = [0.0]
    rep = EwmaReputation(alpha=1.0, prior=0.9, half_life_s=10.0, clock=lambda: now[0])
    rep.job_failed("x")
    assert rep.score("x") == pytest.approx(MIN_SCORE)
    now[0] = 10.0
    assert rep.score("x") == pytest.approx(0.45)  # half of the gap closed after a half-life
    now[0] = 1000.0
    assert rep.score("x") == pytest.approx(0.9, abs=1e-6)


def test_ttft_is_an_ewma() -> None:
    rep = EwmaReputation(alpha=0.5)
    rep.job_succeeded("x", 1.0)
    rep.job_succeeded("x", 0.0)
    rep.job_succeeded("x", None)  # no token came: no TTFT sample
    assert rep.ttft_s("x") == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs", [{"alpha": 0}, {"prior": 1.5}, {"half_life_s": 0}])
def test_reputation_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EwmaReputation(**kwargs)


# --- registry index -----------------------------------------------------------------------


def test_registry_indexes_nodes_by_model_and_unindexes_them() -> None:
    registry = Registry()
    a, b, c = node("a", "m", "x"), node("b", "m"), node("c", "x")
    for conn in (a, b, c):
        registry.add(conn)
    assert {n.name for n in registry.serving("m")} == {"a", "b"}
    assert registry.most_served_model() == "m"  # ties by name: m before x
    assert registry.remove(a) and not registry.remove(a)
    assert [n.name for n in registry.serving("m")] == ["b"]
    assert [n.name for n in registry.serving("x")] == ["c"]
    registry.remove(b)
    assert not registry.has_model("m") and registry.serving("m") == ()
    assert registry.model_counts() == {"x": 1}


def test_a_newer_connection_of_the_same_peer_replaces_the_old_one() -> None:
    registry = Registry()
    old = node("a", "m")
    registry.add(old)
    new = NodeConnection(NoLink(), old.peer, old.state.manifest)
    assert registry.add(new) is old
    assert list(registry.serving("m")) == [new]
    assert not registry.remove(old)  # the old link closing does not drop the new one
    assert registry.get(old.peer_id) is new


def test_swap_removal_keeps_the_index_consistent() -> None:
    registry = Registry()
    conns = [node(f"n{i}", "m") for i in range(50)]
    for conn in conns:
        registry.add(conn)
    rng = random.Random(1)
    alive = set(conns)
    for conn in rng.sample(conns, 30):
        registry.remove(conn)
        alive.discard(conn)
    assert set(registry.serving("m")) == alive and len(registry.serving("m")) == 20


# --- sampled scheduling -------------------------------------------------------------------


def test_large_networks_are_sampled_small_ones_scanned() -> None:
    registry = Registry()
    for i in range(200):
        registry.add(node(f"n{i}", "m"))
    scheduler = Scheduler(registry, sample_size=16, rng=random.Random(7))
    assert len(scheduler.candidates("m")) == 16
    small = Registry()
    for i in range(5):
        small.add(node(f"s{i}", "m"))
    assert len(Scheduler(small, sample_size=16).candidates("m")) == 5


def test_idle_equal_nodes_take_turns() -> None:
    registry = Registry()
    nodes = [node(f"n{i}", "m") for i in range(3)]
    for conn in nodes:
        registry.add(conn)
    scheduler = Scheduler(registry)
    chosen = []
    for step in range(3):
        best = scheduler.candidates("m")[0]
        best.state.last_job = float(step + 1)  # what start_job records
        chosen.append(best.name)
    assert sorted(chosen) == ["n0", "n1", "n2"]


def test_measured_slow_or_unreliable_nodes_rank_last() -> None:
    registry = Registry()
    fast, slow, flaky = node("fast", "m"), node("slow", "m"), node("flaky", "m")
    for conn in (fast, slow, flaky):
        registry.add(conn)
        conn.state.inflight = 1
    rep = EwmaReputation()
    rep.job_succeeded(fast.peer_id, 0.1)
    rep.job_succeeded(slow.peer_id, 2.0)
    rep.job_succeeded(flaky.peer_id, 0.1)
    for _ in range(10):
        rep.job_failed(flaky.peer_id)
    scheduler = Scheduler(registry, rep)
    assert [c.name for c in scheduler.candidates("m")] == ["fast", "slow", "flaky"]


def test_stale_and_closed_nodes_are_not_candidates() -> None:
    registry = Registry()
    stale, closed, ok = node("stale", "m"), node("closed", "m"), node("ok", "m")
    for conn in (stale, closed, ok):
        registry.add(conn)
    stale.state.last_seen -= 60
    closed.lost()
    assert [c.name for c in Scheduler(registry).candidates("m")] == ["ok"]
