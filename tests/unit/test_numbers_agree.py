"""Numbers a newcomer compares: speed in scheduling, reputation shown, credits, model names."""

from __future__ import annotations

import pytest

from lichen.clock import ManualClock
from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import generate_key
from lichen.models.catalog import lookup as catalog_lookup
from lichen.reputation.book import ReputationBook
from lichen.roles.gateway import catalog_name
from lichen.routing.scheduler import Scheduler, answer_time_s
from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry
from lichen.web.network_view import node_row, shown_reputation
from lichen.web.pages import readable_credits
from node_kit import offline_node

_ACCOUNT = generate_key()


def node(name: str, *models: str, slots: int = 1) -> NodeConnection:
    return offline_node(name, dict.fromkeys(models, slots), account=_ACCOUNT)


def scheduler_for(
    *conns: NodeConnection, book: ReputationBook | None = None, aliases: bool = False
) -> Scheduler:
    registry = Registry()
    for conn in conns:
        registry.add(conn)
    return Scheduler(
        registry,
        book or ReputationBook(clock=ManualClock()),
        alias_of=catalog_name if aliases else None,  # what the gateway builder wires in
    )


# --- measured speed counts ----------------------------------------------------------------


def test_sequential_requests_go_mostly_to_the_faster_of_two_idle_nodes() -> None:
    """A 2-thread node (about twice as fast) and a 1-thread one, requests one at a time, as
    a newcomer tries them: the first answer must not make the slower node win every time."""
    fast, slow = node("two-threads", "m"), node("one-thread", "m")
    speeds = {fast.peer_id: 100.0, slow.peer_id: 50.0}  # what each reports once it has run
    book = ReputationBook(clock=ManualClock())
    scheduler = scheduler_for(slow, fast, book=book)
    slow.state.last_job = -1.0  # the slower one is tried first (least recently used)
    chosen = []
    for step in range(8):
        best = scheduler.candidates("m")[0]
        chosen.append(best.name)
        best.state.last_job = float(step)
        book.job_succeeded(best.peer_id, 0.2)  # equal TTFTs: short prompts
        book.served(best.peer_id, tokens=128, latency_s=128 / speeds[best.peer_id])
        best.state.tokens_per_s = speeds[best.peer_id]  # its next heartbeat
    assert chosen[0] == "one-thread" and chosen[1] == "two-threads"  # both get measured
    assert chosen[2:] == ["two-threads"] * 6, chosen


def test_answer_time_grows_with_load_and_is_zero_until_measured() -> None:
    conn = node("n", "m", slots=2)
    assert answer_time_s(conn, "m") == 0.0  # not measured yet: gets tried
    conn.state.tokens_per_s = 64.0
    idle = answer_time_s(conn, "m")
    conn.state.inflight = 2
    assert answer_time_s(conn, "m") > idle > 0


def test_a_busy_fast_node_yields_to_an_idle_slow_one() -> None:
    fast, slow = node("fast", "m"), node("slow", "m")
    fast.state.tokens_per_s, slow.state.tokens_per_s = 100.0, 50.0
    fast.state.inflight = 3  # one slot, three jobs: two wait a whole answer each
    assert [c.name for c in scheduler_for(fast, slow).candidates("m")] == ["slow", "fast"]


# --- the reputation people read -----------------------------------------------------------


def test_a_node_that_never_failed_shows_full_reputation() -> None:
    conn = node("n", "m")
    book = ReputationBook(clock=ManualClock())
    for _ in range(11):
        book.job_succeeded(conn.peer_id, 0.2)
        book.served(conn.peer_id, tokens=60)
    assert book.score(conn.peer_id) < 0.9  # the scheduler still discounts a new identity
    assert shown_reputation(conn, book) == 1.0
    assert node_row(conn, book)["reputation"] == 1.0
    book.job_failed(conn.peer_id)
    assert shown_reputation(conn, book) == pytest.approx(11 / 12)


def test_without_a_book_the_connection_counts_are_shown() -> None:
    conn = node("n", "m")
    assert shown_reputation(conn) == 1.0  # no jobs yet: nothing against it
    conn.state.served, conn.state.failures = 3, 1
    assert shown_reputation(conn) == 0.75


@pytest.mark.parametrize(
    ("ledger", "shown"),
    [
        ("0.000000", "0"),
        ("12.500000", "12.5"),
        ("0.000123", "0.000123"),
        ("3.000000", "3"),
        ("-0.000005", "-0.000005"),
        ("7", "7"),
    ],
)
def test_credits_are_shown_without_empty_decimals(ledger: str, shown: str) -> None:
    assert readable_credits(ledger) == shown


# --- model names: the API accepts what the CLI's --model accepts, and no prefixes -------


def test_a_served_model_is_named_in_any_case_or_by_a_catalog_alias() -> None:
    scheduler = scheduler_for(node("a", "smollm2-135m", "gemma3-270m"), aliases=True)
    assert scheduler.resolve_model("SmolLM2-135M") == "smollm2-135m"
    assert scheduler.resolve_model("smollm2") == "smollm2-135m"  # an alias, as in the CLI
    assert scheduler.resolve_model("gemma-3-270m") == "gemma3-270m"
    for prefix in ("smol", "gemma3", "smollm2-13"):  # prefixes: neither CLI nor API
        with pytest.raises(LichenError) as info:
            scheduler.resolve_model(prefix)
        assert info.value.code is ErrorCode.MODEL_NOT_FOUND


def test_the_cli_accepts_the_same_names() -> None:
    store_names = {"smollm2", "SmolLM2-135M", "smollm2-135m-instruct"}
    for name in store_names:  # what ModelStore.get / --model resolve through the catalog
        entry = catalog_lookup(name)
        assert entry is not None and entry.name == "smollm2-135m"
    assert catalog_lookup("smol") is None  # and no prefixes there either


def test_without_aliases_names_match_as_they_are() -> None:
    scheduler = scheduler_for(node("a", "smollm2-135m"))
    with pytest.raises(LichenError):
        scheduler.resolve_model("smollm2")


def test_an_unknown_model_404_lists_the_served_ones() -> None:
    scheduler = scheduler_for(node("a", "smollm2-135m"), node("b", "gemma3-270m"))
    with pytest.raises(LichenError) as info:
        scheduler.resolve_model("llama3")
    assert info.value.code is ErrorCode.MODEL_NOT_FOUND and info.value.param == "model"
    assert "`gemma3-270m`, `smollm2-135m`" in info.value.message
    with pytest.raises(LichenError) as empty:
        scheduler.resolve_model("")
    assert empty.value.code is ErrorCode.MODEL_NOT_FOUND


def test_names_differing_only_in_case_are_ambiguous() -> None:
    scheduler = scheduler_for(node("a", "Qwen"), node("b", "qwen"))
    with pytest.raises(LichenError) as info:
        scheduler.resolve_model("QWEN")
    assert info.value.code is ErrorCode.MODEL_NOT_FOUND
    assert "ambiguous" in info.value.message and "`Qwen`, `qwen`" in info.value.message
    assert scheduler.resolve_model("qwen") == "qwen"  # the exact name always works


def test_hostile_model_names_are_cut_short_in_the_message() -> None:
    scheduler = scheduler_for(node("a", "m1"), aliases=True)
    with pytest.raises(LichenError) as info:
        scheduler.resolve_model("x" * 10_000 + "\n<script>")
    assert info.value.code is ErrorCode.MODEL_NOT_FOUND
    assert len(info.value.message) < 300


def test_the_404_names_at_most_twenty_models() -> None:
    scheduler = scheduler_for(node("a", *(f"model-{i:02d}" for i in range(30))))
    with pytest.raises(LichenError) as info:
        scheduler.resolve_model("other")
    assert "and 10 more" in info.value.message
