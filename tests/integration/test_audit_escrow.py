"""Issue 11's credit "done when", through the audit path: a node that fails an audit keeps
none of the escrowed credits of that window, ``ledger verify`` still holds, and the sum
of balances stays invariant (SQLite and PostgreSQL).

The ledger's own escrow tests (test_ledger_escrow.py) call ``forfeit_pending`` by hand;
here the forfeit comes from the real :class:`Auditor` judging a real verdict (usage
inflated past the reference's re-count) and the :class:`AuditBook` acting on it.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger_kit import MODEL, NodeKeys
from lichen.audit.auditor import Answer, Auditor
from lichen.audit.book import AuditBook
from lichen.audit.rescoring import Rescored, TokenScore
from lichen.clock import ManualClock
from lichen.identity.signing import generate_key, public_raw
from lichen.ledger import Claim, Ledger, cost, user_account
from lichen.ledger.names import ESCROW
from lichen.ledger.verify import verify_ledger
from lichen.wire.messages import ChatMessage, GenerationRequest, SamplingParams, Usage

NETWORK_KEY = generate_key()
WINDOW_S = 600
PRICE = cost(MODEL, Usage(10, 20))
HI = TokenScore("Hi", -0.1, (("Hi", -0.1), ("Yo", -3.0)))
END = TokenScore("", -0.1, (("", -0.1),), eog=True)


class Reference:
    """The reference re-scores "Hi" as its own top token: the text is the model's."""

    def serves(self, model: str, sha256: str) -> bool:
        return model == MODEL

    async def rescore(
        self, request: GenerationRequest, text: str, pieces: list[str] | None = None
    ) -> Rescored:
        return Rescored((HI, END), prompt_tokens=10, complete=True)


def probe() -> GenerationRequest:
    return GenerationRequest(
        kind="chat",
        model=MODEL,
        messages=[ChatMessage(role="user", content="Say hi.")],
        params=SamplingParams(temperature=0.0, max_tokens=64),
    )


async def test_a_failed_audit_forfeits_the_whole_window_and_the_ledger_still_verifies(
    lichen_db: AsyncEngine,
) -> None:
    clock = ManualClock()
    ledger = Ledger(lichen_db, NETWORK_KEY, clock=clock, audit_window_ms=WINDOW_S * 1000)
    alice, bob = user_account(uuid.uuid4().hex), user_account(uuid.uuid4().hex)
    cheat, honest = NodeKeys(), NodeKeys()
    for user in (alice, bob):
        await ledger.grant(user, 10_000, reason="test")
    for i in range(4):  # the cheat's window: four jobs, two payers
        await ledger.settle(Claim(receipt=cheat.receipt(), consumer=alice if i % 2 else bob))
    await ledger.settle(Claim(receipt=honest.receipt(), consumer=alice))
    before = await ledger.balances()
    assert await ledger.pending_for_node(cheat.peer_id) == 4 * PRICE
    book = AuditBook(quarantine_after=2, penalties=ledger, clock=clock)
    auditor = Auditor(Reference(), book)

    honest_entry = await auditor.audit(
        peer_id=honest.peer_id, request=probe(), answer=Answer("Hi", Usage(10, 2), "stop", ("Hi",))
    )
    assert honest_entry is not None and honest_entry.passed
    clock.advance(WINDOW_S / 2)  # inside the window
    # The cheat answers "Hi" (two tokens with the end) and bills 60.
    entry = await auditor.audit(
        peer_id=cheat.peer_id, request=probe(), answer=Answer("Hi", Usage(10, 60), "stop", ("Hi",))
    )
    assert entry is not None and not entry.passed
    assert {f.kind for f in entry.findings} == {"usage"}
    record = book.node(cheat.peer_id)
    assert record is not None and record.forfeited == 4 * PRICE

    assert await ledger.pending(cheat.owner) == 0
    assert await ledger.balance(alice) == 10_000 - PRICE  # refunded both cheat jobs
    assert await ledger.balance(bob) == 10_000  # refunded
    after = await ledger.balances()
    assert sum(after.values()) == sum(before.values()) == 0  # credits moved, none made
    clock.advance(WINDOW_S)  # the window closes: only the honest node is paid
    assert await ledger.release_due() == PRICE
    assert await ledger.balance(cheat.owner) == 0  # keeps none of that window
    assert await ledger.balance(honest.owner) == PRICE
    assert await ledger.balance(ESCROW) == 0
    assert sum((await ledger.balances()).values()) == 0
    report = await verify_ledger(lichen_db, [public_raw(NETWORK_KEY)])
    assert report.ok, report.problems
    history = await ledger.history(bob)
    assert history[0].kind == "forfeit" and history[0].memo == "audit failed: usage"
