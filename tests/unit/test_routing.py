"""Routing helpers: resuming a request elsewhere, merging usage, ranking nodes."""

from __future__ import annotations

import pytest

from lichen.engines.base import Finish
from lichen.errors import ErrorCode, LichenError
from lichen.routing.router import _merged_finish, _resumed
from lichen.routing.scheduler import Scheduler, expected_ttft_s
from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry
from lichen.wire.messages import (
    ChatMessage,
    GenerationRequest,
    SamplingParams,
    Usage,
)
from node_kit import offline_node

REQUEST = GenerationRequest(
    kind="chat",
    model="m",
    messages=[ChatMessage(role="user", content="hello")],
    params=SamplingParams(max_tokens=10, temperature=0.0, stop=["\n"], seed=3),
)

# --- _resumed ---------------------------------------------------------------------------


def test_nothing_sent_means_the_same_request() -> None:
    assert _resumed(REQUEST, "", 0) is REQUEST


def test_resume_carries_the_sent_text_and_the_remaining_budget() -> None:
    resumed = _resumed(REQUEST, "Hi there", 3)
    assert resumed is not None
    assert resumed.continuation == "Hi there"
    assert resumed.params.max_tokens == 7
    # everything else is the original request
    assert resumed.messages == REQUEST.messages
    assert (resumed.params.temperature, resumed.params.stop, resumed.params.seed) == (
        0.0,
        ["\n"],
        3,
    )
    assert REQUEST.continuation == "" and REQUEST.params.max_tokens == 10  # not mutated


def test_resume_appends_to_an_existing_continuation() -> None:
    base = _resumed(REQUEST, "A", 1)
    assert base is not None
    again = _resumed(base, "B", 1)
    assert again is not None
    assert again.continuation == "AB"
    assert again.params.max_tokens == 8


def test_resume_without_a_budget_keeps_none() -> None:
    unbounded = GenerationRequest(kind="completion", model="m", prompt="p")
    resumed = _resumed(unbounded, "xyz", 5)
    assert resumed is not None
    assert resumed.params.max_tokens is None
    assert resumed.continuation == "xyz"
    assert resumed.prompt == "p"


@pytest.mark.parametrize("sent", [10, 11])
def test_budget_used_up_means_no_further_attempt(sent: int) -> None:
    assert _resumed(REQUEST, "x" * sent, sent) is None


# --- _merged_finish ---------------------------------------------------------------------


def test_finish_of_an_unresumed_job_is_unchanged() -> None:
    finish = Finish("stop", Usage(12, 30))
    assert _merged_finish(finish, 30, resumed=False) is finish


def test_resumed_usage_gives_the_continuation_back_to_the_completion() -> None:
    # 5 prompt tokens; node A streamed 3 tokens and died; node B saw 5 + 3 prompt
    # tokens and generated 4 more. The client got 7 tokens for a 5-token prompt.
    finish = Finish("length", Usage(prompt_tokens=8, completion_tokens=4))
    merged = _merged_finish(finish, 7, resumed=True)
    assert merged.usage == Usage(5, 7)
    assert merged.finish_reason == "length"


def test_merged_prompt_tokens_never_go_negative() -> None:
    merged = _merged_finish(Finish("stop", Usage(1, 1)), 9, resumed=True)
    assert merged.usage == Usage(0, 9)


# --- scheduling -------------------------------------------------------------------------


def _node(name: str, models: dict[str, int], **state: object) -> NodeConnection:
    return offline_node(name, models, **state)


def _scheduler(*nodes: NodeConnection) -> Scheduler:
    registry = Registry()
    for node in nodes:
        registry.add(node)
    return Scheduler(registry)


def _names(nodes: list[NodeConnection]) -> list[str]:
    return [n.name for n in nodes]


def test_an_idle_node_answers_at_once() -> None:
    assert expected_ttft_s(_node("a", {"m": 4}), "m") == 0.0


def test_jobs_past_the_slots_cost_a_typical_answer_each() -> None:
    slow = _node("slow", {"m": 2}, inflight=4, tokens_per_s=10.0)
    fast = _node("fast", {"m": 2}, inflight=4, tokens_per_s=100.0)
    assert expected_ttft_s(slow, "m") > expected_ttft_s(fast, "m") > 0.5
    busy_slots_only = _node("b", {"m": 8}, inflight=4, tokens_per_s=10.0)
    assert expected_ttft_s(busy_slots_only, "m") < 0.01


def test_failures_make_a_node_lose_ties() -> None:
    clean = _node("clean", {"m": 1}, inflight=1, served=10)
    flaky = _node("flaky", {"m": 1}, inflight=1, served=10, failures=10)
    assert expected_ttft_s(flaky, "m") > expected_ttft_s(clean, "m")


def test_candidates_are_ranked_and_filtered() -> None:
    saturated = _node("saturated", {"m": 1}, inflight=3, tokens_per_s=50.0)
    idle = _node("idle", {"m": 1})
    loaded = _node("loaded", {"m": 4}, inflight=2)
    draining = _node("draining", {"m": 8}, draining=True)
    other_model = _node("other", {"x": 8})
    scheduler = _scheduler(saturated, draining, loaded, other_model, idle)
    assert _names(scheduler.candidates("m")) == ["idle", "loaded", "saturated"]
    assert _names(scheduler.candidates("m", exclude={idle.peer_id})) == ["loaded", "saturated"]
    assert scheduler.candidates("nothing") == []


def test_resolve_named_model() -> None:
    scheduler = _scheduler(_node("a", {"m": 1}))
    assert scheduler.resolve_model("m") == "m"
    with pytest.raises(LichenError) as info:
        scheduler.resolve_model("unknown")
    assert info.value.code is ErrorCode.MODEL_NOT_FOUND
    assert info.value.param == "model"


def test_resolve_auto_picks_the_most_served_model() -> None:
    scheduler = _scheduler(
        _node("a", {"small": 1, "big": 1}), _node("b", {"big": 1}), _node("c", {"zzz": 1})
    )
    assert scheduler.resolve_model("auto") == "big"
    assert _scheduler(_node("a", {"b": 1, "a": 1})).resolve_model("auto") == "a"  # ties: by name


def test_resolve_auto_without_nodes_is_no_capacity() -> None:
    with pytest.raises(LichenError) as info:
        _scheduler().resolve_model("auto")
    assert info.value.code is ErrorCode.NO_CAPACITY


def test_a_model_only_draining_nodes_serve_is_no_capacity_not_unknown() -> None:
    scheduler = _scheduler(_node("a", {"m": 1}, draining=True))
    with pytest.raises(LichenError) as info:
        scheduler.resolve_model("m")
    assert info.value.code is ErrorCode.NO_CAPACITY
