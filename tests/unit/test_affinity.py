"""Prefix affinity: hash chains over prompt blocks, bounded per node, and how they rank nodes."""

from __future__ import annotations

import pickle

from lichen.routing.affinity import BLOCK_CHARS, MIN_BLOCKS, AffinityTable
from lichen.routing.scheduler import Scheduler
from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry
from lichen.wire.messages import (
    ChatMessage,
    GenerationRequest,
    ModelInfo,
)
from node_kit import offline_node

CANARY = "canary-7f3a-secret-prompt "
SYSTEM = ChatMessage(role="system", content="You are terse. " * 40)


def _node(name: str, *, slots: int = 2, **state: object) -> NodeConnection:
    info = ModelInfo(name="m", sha256="", engine="fake", slots=slots, context=4096)
    return offline_node(name, [info], **({"tokens_per_s": 40.0} | state))


def _chat(*messages: ChatMessage) -> GenerationRequest:
    return GenerationRequest(kind="chat", model="m", messages=list(messages))


def _turns(n: int, words: int = 200) -> list[ChatMessage]:
    """A conversation of ``n`` user/assistant exchanges, each message ``words`` words long."""
    out = [SYSTEM]
    for i in range(n):
        out.append(ChatMessage(role="user", content=f"{CANARY}question {i} " + "w " * words))
        out.append(ChatMessage(role="assistant", content=f"answer {i} " + "a " * words))
    return out


# --- the hash chain -----------------------------------------------------------------------


def test_a_follow_up_turn_extends_the_chain_of_the_previous_turn_and_its_answer() -> None:
    table = AffinityTable()
    history = _turns(2)
    first = table.chain(_chat(*history[:-1]), answer=history[-1].content)
    follow_up = table.chain(_chat(*history, ChatMessage(role="user", content="next")))
    assert len(follow_up) > len(first)
    assert follow_up.digests[: len(first)] == first.digests
    assert follow_up.chars[len(first) - 1] == first.chars[-1]


def test_different_content_role_or_model_gives_a_different_chain() -> None:
    table = AffinityTable()
    base = table.chain(_chat(ChatMessage(role="user", content="hello")))
    assert table.chain(_chat(ChatMessage(role="user", content="hellp"))).digests != base.digests
    assert table.chain(_chat(ChatMessage(role="system", content="hello"))).digests != base.digests
    other_model = GenerationRequest(
        kind="chat", model="n", messages=[ChatMessage(role="user", content="hello")]
    )
    assert table.chain(other_model).digests != base.digests


def test_completion_prompts_are_chained_in_blocks() -> None:
    table = AffinityTable()
    short = table.chain(GenerationRequest(kind="completion", model="m", prompt="x" * 1000))
    longer = table.chain(GenerationRequest(kind="completion", model="m", prompt="x" * 2000))
    assert len(short) == -(-1000 // BLOCK_CHARS)
    assert longer.digests[: len(short) - 1] == short.digests[:-1]


def test_hostile_prompts_hash_without_error_and_the_chain_is_bounded() -> None:
    table = AffinityTable()
    weird = "\ud800\x00\uffff" * 100  # a lone surrogate, NULs
    assert len(table.chain(_chat(ChatMessage(role="user", content=weird)))) == 2
    empty = table.chain(_chat(ChatMessage(role="user", content="")))
    assert len(empty) == 1
    huge = table.chain(GenerationRequest(kind="completion", model="m", prompt="y" * 5_000_000))
    assert len(huge) <= 4096


# --- the table ----------------------------------------------------------------------------


def test_the_longest_prefix_a_node_was_sent_is_matched() -> None:
    table = AffinityTable()
    history = _turns(3)
    sent = table.chain(_chat(*history[:3]))
    table.remember("a", sent)
    assert table.matched_chars("a", table.chain(_chat(*history))) == sent.chars[-1]
    assert table.matched_chars("b", table.chain(_chat(*history))) == 0
    unrelated = table.chain(_chat(ChatMessage(role="user", content="something else")))
    assert table.matched_chars("a", unrelated) == 0


def test_each_node_keeps_a_bounded_lru_and_few_nodes() -> None:
    table = AffinityTable(max_nodes=3)
    for i in range(200):
        table.remember("a", table.chain(_chat(ChatMessage(role="user", content=f"{i}"))), 1)
    assert len(table.held("a")) == MIN_BLOCKS  # capacity is clamped up to the minimum
    recent = table.chain(_chat(ChatMessage(role="user", content="199")))
    evicted = table.chain(_chat(ChatMessage(role="user", content="0")))
    assert table.matched_chars("a", recent) > 0 and table.matched_chars("a", evicted) == 0
    for name in "bcd":
        table.remember(name, recent)
    assert table.nodes() == ["b", "c", "d"]  # "a", used least recently, was forgotten
    table.forget("b")
    assert table.nodes() == ["c", "d"]


def test_only_hashes_are_kept_never_text() -> None:
    table = AffinityTable()
    history = _turns(2)
    table.remember("a", table.chain(_chat(*history)))
    table.remember("a", table.chain(_chat(*history[:-1]), answer=history[-1].content))
    held = table.held("a")
    assert held and all(isinstance(d, int) and 0 <= d < 2**64 for d in held)
    dumped = pickle.dumps(table.__dict__)
    assert CANARY.encode() not in dumped and b"question" not in dumped


# --- ranking ------------------------------------------------------------------------------


def _scheduler(*nodes: NodeConnection, affinity: bool = True) -> Scheduler:
    registry = Registry()
    for node in nodes:
        registry.add(node)
    return Scheduler(registry, affinity=affinity)


def test_a_follow_up_turn_goes_to_the_node_that_served_the_conversation() -> None:
    a, b, c = _node("a", last_job=1.0), _node("b", last_job=3.0), _node("c", last_job=2.0)
    scheduler = _scheduler(a, b, c)
    history = _turns(3)
    turn = _chat(*history[:-1])
    assert scheduler.candidates("m", prefix=scheduler.prefix_chain(turn))[0] is a  # LRU tie-break
    scheduler.remember(b, scheduler.prefix_chain(turn))
    scheduler.remember_answer(b.peer_id, turn, history[-1].content)
    follow_up = _chat(*history, ChatMessage(role="user", content="and then?"))
    assert scheduler.candidates("m", prefix=scheduler.prefix_chain(follow_up))[0] is b
    # Without a prefix (or another conversation), the ranking is the plain one.
    assert scheduler.candidates("m")[0] is a
    other = _chat(ChatMessage(role="user", content="a new conversation"))
    assert scheduler.candidates("m", prefix=scheduler.prefix_chain(other))[0] is a


def test_a_busy_node_loses_its_affinity_when_the_wait_exceeds_the_saved_prefill() -> None:
    a, b = _node("a", last_job=1.0), _node("b", last_job=2.0)
    scheduler = _scheduler(a, b)
    history = _turns(3)
    scheduler.remember(b, scheduler.prefix_chain(_chat(*history)))
    follow_up = scheduler.prefix_chain(_chat(*history, ChatMessage(role="user", content="?")))
    assert scheduler.saved_prefill_s(b, follow_up) > 0
    b.state.inflight = 1  # one of two slots busy: still worth it
    assert scheduler.candidates("m", prefix=follow_up)[0] is b
    b.state.inflight, b.state.queue_depth = 2, 4  # full, with a queue: go elsewhere
    assert scheduler.candidates("m", prefix=follow_up)[0] is a


def test_affinity_off_ranks_as_before() -> None:
    a, b = _node("a", last_job=1.0), _node("b", last_job=2.0)
    scheduler = _scheduler(a, b, affinity=False)
    assert scheduler.affinity is None
    turn = _chat(*_turns(2))
    assert scheduler.prefix_chain(turn) is None
    scheduler.remember(b, scheduler.prefix_chain(turn))
    scheduler.remember_answer(b.peer_id, turn, "x")
    assert scheduler.candidates("m", prefix=scheduler.prefix_chain(turn))[0] is a


def test_a_shared_system_prompt_does_not_pile_every_conversation_on_one_node() -> None:
    # Nine conversations open at once with the same long system prompt: the first node
    # that was sent it holds it, but once its slots are full the wait outweighs the saved
    # prompt processing, so the conversations spread evenly (load within 1.5x of even).
    nodes = [_node(name, last_job=float(i)) for i, name in enumerate("abc")]
    scheduler = _scheduler(*nodes)
    for node in nodes:  # measured TTFTs count for load as well as for the saving
        scheduler.reputation.job_succeeded(node.peer_id, 1.5)
    system = ChatMessage(role="system", content="Follow the house rules. " * 400)
    counts = dict.fromkeys("abc", 0)
    for c in range(9):
        turn = _chat(system, ChatMessage(role="user", content=f"conversation {c}"))
        prefix = scheduler.prefix_chain(turn)
        chosen = scheduler.candidates("m", prefix=prefix)[0]
        assert scheduler.saved_prefill_s(chosen, prefix) >= 0
        scheduler.remember(chosen, prefix)
        chosen.state.inflight += 1  # the job runs on: the node stays busy
        counts[chosen.name] += 1
    assert max(counts.values()) <= 1.5 * 9 / 3, counts
    # The affinity was real: after the first, every node had been sent the prompt.
    assert all(scheduler.affinity is not None and scheduler.affinity.held(n.peer_id) for n in nodes)


def test_a_long_cold_prefill_does_not_push_the_next_turn_to_an_unmeasured_node() -> None:
    # bench/agent_loop.py's run 2: node A read a 7.4k-token session cold (TTFT 281 s,
    # its measured TTFT), node B was never measured (TTFT 0). Turn 2 must stay on A,
    # which holds all but the new message, not go to B, which would read it all again.
    a, b = _node("a", last_job=2.0), _node("b", last_job=1.0)
    scheduler = _scheduler(a, b)
    session = _turns(12, words=500)
    turn = _chat(*session[:-1])
    scheduler.remember(a, scheduler.prefix_chain(turn))
    scheduler.remember_answer(a.peer_id, turn, session[-1].content)
    scheduler.reputation.job_succeeded(a.peer_id, 281.0)
    follow_up = scheduler.prefix_chain(_chat(*session, ChatMessage(role="user", content="next")))
    assert scheduler.candidates("m", prefix=follow_up)[0] is a
    # Only a prompt A holds gets its measured TTFT forgiven, not a new conversation.
    other = scheduler.prefix_chain(_chat(ChatMessage(role="user", content="hello there")))
    assert scheduler.saved_prefill_s(a, other) == 0
    assert scheduler.saved_prefill_s(a, follow_up) > 281
