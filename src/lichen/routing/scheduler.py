"""Choosing a node: candidates by model, health and free slots, ranked by expected TTFT.

A decision must stay cheap on a network of thousands of nodes, so the scheduler
never scores every server of a model: when more than :data:`SAMPLE_SIZE` nodes
serve it, it scores a random sample of that many ("power of d choices"), which
spreads load nearly as well as a full scan at a constant cost. Smaller networks
are scanned exhaustively, so there the choice is exact.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Iterable, Sequence

from lichen.errors import ErrorCode, LichenError
from lichen.reputation.book import EwmaReputation, Reputation
from lichen.routing.affinity import (
    CHARS_PER_TOKEN,
    AffinityTable,
    PrefixChain,
    capacity_blocks,
)
from lichen.tracker.connection import NodeConnection, NodeState
from lichen.tracker.registry import Registry
from lichen.wire.messages import GenerationRequest

AUTO_MODEL = "auto"
SAMPLE_SIZE = 32
TYPICAL_ANSWER_TOKENS = 128
DEFAULT_TOKENS_PER_S = 50.0
FAILURE_COST_S = 5.0  # what a failed job costs the client (detection, failover, re-prefill)
MAX_NAME_LENGTH = 128  # longer names cannot be served (the wire's bound): no lookup
MAX_LISTED_MODELS = 20  # an unknown model's 404 names at most this many served ones
STALE_AFTER_S = 5.0  # no frame for this long: not a candidate (the watchdog drops it soon)
PREFILL_SPEEDUP = 8.0  # prompt tokens/s per decode token/s (batched prefill; CPU, small models)
DEFAULT_CONTEXT = 4096  # tokens per slot when a manifest does not say
ANSWER_ALPHA = 0.1  # weight of the newest answer in the typical answer length
MIN_ANSWER_TOKENS, MAX_ANSWER_TOKENS = 8.0, 4096.0  # bounds on one answer's sample


def expected_ttft_s(
    conn: NodeConnection,
    model: str,
    reputation: Reputation | None = None,
    *,
    answer_tokens: float = TYPICAL_ANSWER_TOKENS,
    ttft_prior: float = 0.0,
) -> float:
    """A cheap estimate of how long a new job on ``conn`` would wait for its first token.

    A free slot answers at once; past the slots, each job ahead costs about one
    typical answer at the node's measured speed. A node whose TTFT was measured
    (the reputation's EWMA, which includes the link's round trip and prompt
    processing) adds it, scaled up by the share of its slots that are busy, since
    batched slots share the hardware. Failures inflate the estimate so that flaky
    nodes lose ties; an unmeasured idle node scores 0, so new nodes get tried.
    """
    st = conn.state
    slots = st.slots.get(model, 1)
    busy = st.inflight + st.queue_depth
    ahead = max(0, busy - slots + 1)
    speed = st.tokens_per_s or DEFAULT_TOKENS_PER_S
    measured = reputation.ttft_s(conn.peer_id) if reputation is not None else None
    base = (measured if measured is not None else ttft_prior) * (1.0 + busy / slots)
    wait = ahead * answer_tokens / speed
    reliability = (st.served + 1) / (st.served + st.failures + 1)
    return (base + wait + 0.001 * busy) / reliability


def _answer_cap(request: GenerationRequest | None, typical: float) -> float:
    """The tokens a job is expected to generate: the typical answer, or fewer if its
    ``max_tokens`` says so."""
    limit = request.params.max_tokens if request is not None else None
    return min(typical, float(limit)) if limit else typical


def _names(names: Sequence[str], limit: int = MAX_LISTED_MODELS) -> str:
    """```a`, `b`` and, past ``limit``, how many more."""
    listed = ", ".join(f"`{name}`" for name in names[:limit])
    return listed + (f" and {len(names) - limit} more" if len(names) > limit else "")


def answer_time_s(
    conn: NodeConnection, model: str, *, answer_tokens: float = TYPICAL_ANSWER_TOKENS
) -> float:
    """How long a typical answer takes to generate on ``conn`` once it has started.

    Measured speed is what separates an idle 2-thread node from an idle 1-thread
    one (their TTFTs are alike on a short prompt): without it the scheduler kept
    choosing whichever answered first once. Batched slots share the hardware, so a
    busy node's speed per answer drops with its load. A node that has not reported a
    speed yet costs nothing here, so new nodes get tried and measured.
    """
    st = conn.state
    if st.tokens_per_s <= 0:
        return 0.0
    return answer_tokens / st.tokens_per_s * _load_factor(st, st.slots.get(model, 1))


def _load_factor(st: NodeState, slots: int) -> float:
    """How much slower each answer runs on a node as busy as ``st``: batched slots share
    the hardware (2 with every slot busy)."""
    return 1.0 + min(st.inflight + st.queue_depth, slots) / slots


class Scheduler:
    """Ranks the registry's nodes for a request."""

    def __init__(
        self,
        registry: Registry,
        reputation: Reputation | None = None,
        *,
        sample_size: int = SAMPLE_SIZE,
        rng: random.Random | None = None,
        trust_for: Callable[[str], Collection[str]] | None = None,
        blocked: Callable[[str], bool] | None = None,
        alias_of: Callable[[str], str | None] | None = None,
        affinity: bool = True,
        queue_per_slot: float | None = None,
        queue_wait_s: float | None = None,
    ) -> None:
        self.registry = registry
        self.reputation: Reputation = reputation if reputation is not None else EwmaReputation()
        self.sample_size = sample_size
        self._rng = rng or random.Random()
        # Privacy class -> trust levels allowed to serve it (the network policy's
        # privacy_classes); None: every node may serve every request.
        self.trust_for = trust_for
        # Nodes that get no jobs (e.g. quarantined by failed audits); None: none are.
        self.blocked = blocked
        # Another name a model is known by -> its name (the model catalog's aliases, which
        # the CLI's --model accepts too); None: names are matched as they are, in any case.
        self.alias_of = alias_of
        # Prefix affinity (which node was sent which prompt prefix, as hashes); None: off.
        self.affinity: AffinityTable | None = AffinityTable() if affinity else None
        # Jobs per slot a node may be sent beyond its slots; a node past that is no
        # candidate, so when every node is, a request is refused at once (503 with
        # Retry-After) instead of queueing. None: the nodes' own bounded queues decide.
        self.queue_per_slot = queue_per_slot
        # A node with every slot busy is a candidate only while a slot is expected to free
        # within this many seconds (a queued job then waits about that long); None: off.
        self.queue_wait_s = queue_wait_s
        # How long answers on this network are (an EWMA of answered tokens): what a job
        # ahead in a queue costs, and what a new job costs on a node.
        self.answer_tokens = float(TYPICAL_ANSWER_TOKENS)

    def resolve_model(self, requested: str) -> str:
        """Map ``auto`` to the model most nodes serve; check the others exist."""
        if requested == AUTO_MODEL:
            model = self.registry.most_served_model()
            if model is None:
                raise LichenError(ErrorCode.NO_CAPACITY, "no node is serving any model right now")
            return model
        if not self.registry.has_model(requested):
            requested = self._unique_match(requested)
        if all(c.state.draining for c in self.registry.serving(requested)):
            raise LichenError(
                ErrorCode.NO_CAPACITY, f"every node serving `{requested}` is shutting down"
            )
        return requested

    def _unique_match(self, requested: str) -> str:
        """The served model ``requested`` names the way the CLI's ``--model`` does: its name
        in any case, or a catalog alias (``smollm2`` for ``smollm2-135m``); no prefixes, in
        the API as in the CLI. Anything else is a 404 that names the served models."""
        served = sorted(self.registry.model_counts())
        folded = requested.strip().lower()
        wanted = {folded}
        if self.alias_of is not None and len(folded) <= MAX_NAME_LENGTH:
            canonical = self.alias_of(folded)
            if canonical is not None:
                wanted.add(canonical.lower())
        matches = [name for name in served if name.lower() in wanted]
        if len(matches) == 1:
            return matches[0]
        shown = requested if len(requested) <= 80 else requested[:77] + "..."
        if len(matches) > 1:  # e.g. "M" and "m" served by different nodes
            raise LichenError(
                ErrorCode.MODEL_NOT_FOUND,
                f"The model `{shown}` is ambiguous: it could be {_names(matches)}; "
                "give the exact name",
                param="model",
            )
        raise LichenError(
            ErrorCode.MODEL_NOT_FOUND,
            f"The model `{shown}` does not exist or no node serves it; served models: "
            f"{_names(served) or 'none right now'} (or `auto`)",
            param="model",
        )

    def score(self, conn: NodeConnection, model: str, ttft_prior: float = 0.0) -> float:
        """Lower is better: the expected time to a whole answer (TTFT plus generating a
        typical answer at the node's measured speed) inflated by distrust, plus the
        expected cost of a failure (a failover or resume) weighted by how likely
        reputation says one is. ``ttft_prior``: the TTFT assumed for a node not measured
        yet (candidates() passes the median of the measured ones)."""
        trust = self.reputation.score(conn.peer_id)
        tokens = self.answer_tokens
        expected = expected_ttft_s(
            conn, model, self.reputation, answer_tokens=tokens, ttft_prior=ttft_prior
        ) + answer_time_s(conn, model, answer_tokens=tokens)
        return expected / trust + (1.0 - trust) * FAILURE_COST_S

    def saved_prefill_s(self, conn: NodeConnection, prefix: PrefixChain | None) -> float:
        """Prompt processing ``conn`` likely skips because its KV cache still holds the
        longest prefix of ``prefix`` that it was sent (0 with affinity off).

        Two parts: the held characters at an estimated prefill speed, and the same share
        of the node's measured TTFT. That TTFT is an average of raw seconds, mostly the
        prompt processing of whatever it was sent (a long prompt read cold makes it
        large), so without the second part the node that read a long session's prompt
        would lose its next turn to a never-measured node, which would read it all again.
        """
        if self.affinity is None or not prefix:
            return 0.0
        chars = self.affinity.matched_chars(conn.peer_id, prefix)
        if not chars:
            return 0.0
        st = conn.state
        speed = (st.tokens_per_s or DEFAULT_TOKENS_PER_S) * PREFILL_SPEEDUP
        held = min(1.0, chars / max(1, prefix.chars[-1]))
        slots = max(1, max(st.slots.values(), default=1))
        measured = (self.reputation.ttft_s(conn.peer_id) or 0.0) * (
            1.0 + (st.inflight + st.queue_depth) / slots
        )  # as score() counts it
        # In the units of score(): expected seconds inflated by distrust.
        trust = self.reputation.score(conn.peer_id)
        return (chars / CHARS_PER_TOKEN / speed + held * measured) / trust

    def prefix_chain(self, request: GenerationRequest) -> PrefixChain | None:
        """The request's prompt as a hash chain for affinity (None with affinity off)."""
        return self.affinity.chain(request) if self.affinity is not None else None

    def remember(self, conn: NodeConnection, prefix: PrefixChain | None) -> None:
        """``prefix`` was sent to ``conn``: later requests sharing it prefer that node."""
        if self.affinity is None or not prefix:
            return
        tokens = sum(
            (m.context or DEFAULT_CONTEXT) * max(1, m.slots) for m in conn.state.manifest.models
        )
        self.affinity.remember(conn.peer_id, prefix, capacity_blocks(tokens))

    def remember_answer(self, peer_id: str, request: GenerationRequest, answer: str) -> None:
        """``peer_id`` answered ``request`` with ``answer``: its KV cache holds both, which
        is how the conversation's next turn starts. Its length updates the typical one."""
        if not answer:  # e.g. only tool calls: says nothing about answer lengths
            return
        sample = min(MAX_ANSWER_TOKENS, max(MIN_ANSWER_TOKENS, len(answer) / CHARS_PER_TOKEN))
        self.answer_tokens += ANSWER_ALPHA * (sample - self.answer_tokens)
        if self.affinity is not None:
            self.affinity.remember(peer_id, self.affinity.chain(request, answer))

    def candidates(
        self,
        model: str,
        exclude: Iterable[str] = (),
        privacy_class: str = "",
        prefix: PrefixChain | None = None,
    ) -> list[NodeConnection]:
        """Healthy nodes serving ``model``, best first (at most ``sample_size`` of them);
        with a ``privacy_class``, only nodes whose granted trust level may serve it.

        With a ``prefix`` (prefix affinity), a node's score drops by the prompt
        processing it likely skips: a follow-up turn goes back to the node that
        served the conversation, unless that node's expected wait exceeds the saving.
        """
        servers = self.registry.serving(model)
        allowed = (
            self.trust_for(privacy_class) if privacy_class and self.trust_for is not None else None
        )
        pool = self._sample(servers)
        if allowed is not None:
            pool = [c for c in pool if c.peer.trust in allowed]
            if not pool and len(servers) > self.sample_size:  # rare trust levels: scan them all
                pool = [c for c in servers if c.peer.trust in allowed]
        skip = set(exclude)
        fresh_after = time.monotonic() - STALE_AFTER_S
        healthy = [
            c
            for c in pool
            if not c.state.draining
            and not c.closed
            and c.state.last_seen >= fresh_after
            and c.peer_id not in skip
            and not (self.blocked is not None and self.blocked(c.peer_id))
            and not self.full(c, model)
        ]
        # A node whose TTFT was not measured yet is assumed to answer like the typical
        # measured one, not instantly: else a busy unmeasured node beat an idle measured
        # one. New nodes still get tried first: an unmeasured speed costs nothing.
        ttfts = sorted(
            t for t in (self.reputation.ttft_s(c.peer_id) for c in healthy) if t is not None
        )
        prior = ttfts[len(ttfts) // 2] if ttfts else 0.0
        # Ties (e.g. idle nodes with no history) go to the node used least recently.
        return sorted(
            healthy,
            key=lambda c: (
                self.score(c, model, prior) - self.saved_prefill_s(c, prefix),
                c.state.last_job,
            ),
        )

    def full(self, conn: NodeConnection, model: str) -> bool:
        """``conn`` already runs its slots plus ``queue_per_slot`` jobs a slot, or (with
        ``queue_wait_s``) runs them all and no slot is expected to free in time."""
        st = conn.state
        slots = st.slots.get(model, 1)
        if self.queue_per_slot is not None and st.inflight >= slots * (1.0 + self.queue_per_slot):
            return True
        return (
            self.queue_wait_s is not None
            and st.inflight >= slots
            and self.slot_free_in_s(conn, model) > self.queue_wait_s
        )

    def slot_free_in_s(self, conn: NodeConnection, model: str) -> float:
        """When a job sent to ``conn`` now would start: once as many of its jobs have ended
        as are waiting ahead of it plus one. A job's time left is the tokens it has left
        (its ``max_tokens``, at most the network's typical answer, less the chunks the
        tracker received for it) at the node's measured speed per answer under its load."""
        st = conn.state
        slots = st.slots.get(model, 1)
        per_token_s = _load_factor(st, slots) / (st.tokens_per_s or DEFAULT_TOKENS_PER_S)
        left = sorted(
            max(0.0, _answer_cap(job.request, self.answer_tokens) - job.received) * per_token_s
            for job in conn.jobs.values()
        )
        ahead = max(0, st.inflight - slots)  # jobs already waiting in the node's queue
        return left[ahead] if ahead < len(left) else float("inf")

    def _sample(self, servers: Sequence[NodeConnection]) -> list[NodeConnection]:
        """All of ``servers`` if few, else about ``sample_size`` of them at random.

        Drawn with replacement and de-duplicated (a few fewer than ``sample_size`` at
        worst): ``random()`` per draw is far cheaper than ``random.sample``.
        """
        n = len(servers)
        if n <= self.sample_size:
            return list(servers)
        draw = self._rng.random
        picked = {id(c): c for c in (servers[int(draw() * n)] for _ in range(self.sample_size))}
        return list(picked.values())
