"""Audit verdicts: quarantine, forfeits, reputation, evidence storage and the network API."""

from __future__ import annotations

import json
from typing import cast

import httpx
import pytest
from fastapi import FastAPI, WebSocket
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.audit.book import AuditBook
from lichen.audit.service import audit_json
from lichen.audit.store import AuditStore, findings_from
from lichen.audit.verifier import Finding, Verdict
from lichen.clock import ManualClock
from lichen.http.errors import install_error_handlers
from lichen.tracker.api import AUDITS_PATH, NETWORK_PATH, mount_tracker
from lichen.tracker.registry import Registry
from lichen.tracker.service import TrackerService

FAIL = Verdict(
    False,
    (Finding("token", "not greedy", position=3, claimed=" Visit", reference="<end>", score=9.5),),
    positions=4,
    max_margin=9.5,
)
PASS = Verdict(True, positions=12)


class Escrow:
    """Stands in for the ledger's escrow (``Ledger.forfeit_pending``)."""

    def __init__(self, pending: dict[str, int]) -> None:
        self.pending = pending
        self.calls: list[tuple[str, str]] = []

    async def forfeit_pending(self, peer_id: str, *, reason: str) -> int:
        self.calls.append((peer_id, reason))
        return self.pending.pop(peer_id, 0)


class Failures:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def job_failed(self, peer_id: str) -> None:
        self.failed.append(peer_id)


async def test_failures_forfeit_lower_reputation_and_quarantine() -> None:
    escrow = Escrow({"lp-bad": 700, "lp-good": 500})
    failures = Failures()
    book = AuditBook(quarantine_after=2, penalties=escrow, reputation=failures)
    for _ in range(5):
        await book.record(peer_id="lp-good", model="m", verdict=PASS)
    assert not book.quarantined("lp-good") and escrow.calls == []
    await book.record(peer_id="lp-bad", model="m", verdict=FAIL, probe_id="p001")
    assert not book.quarantined("lp-bad")
    await book.record(peer_id="lp-bad", model="m", verdict=PASS)
    await book.record(peer_id="lp-bad", model="m", verdict=FAIL)
    assert book.quarantined("lp-bad")
    assert failures.failed == ["lp-bad", "lp-bad"]
    assert [c[0] for c in escrow.calls] == ["lp-bad", "lp-bad"]
    assert "token" in escrow.calls[0][1]
    record = book.node("lp-bad")
    assert record is not None
    assert record.summary() == {
        "audits": 3,
        "passed": 1,
        "failed": 2,
        "quarantined": True,
        "forfeited": 700,
        "last_ms": record.last_ms,
    }
    assert escrow.pending == {"lp-good": 500}  # the honest node keeps its escrow
    assert book.release("lp-bad") and not book.quarantined("lp-bad")
    assert not book.release("lp-good")


async def test_repeated_greedy_slips_become_a_drift_failure() -> None:
    book = AuditBook(quarantine_after=2, slips_to_fail=2)
    slipped = Verdict(True, positions=8, slips=1)
    first = await book.record(peer_id="lp-drift", model="m", verdict=slipped)
    assert first.passed
    second = await book.record(peer_id="lp-drift", model="m", verdict=slipped)
    assert not second.passed and second.findings[0].kind == "drift"
    await book.record(peer_id="lp-drift", model="m", verdict=PASS)  # clean answers don't count
    await book.record(peer_id="lp-drift", model="m", verdict=slipped)
    assert not book.quarantined("lp-drift")
    await book.record(peer_id="lp-drift", model="m", verdict=slipped)
    assert book.quarantined("lp-drift")


def test_quarantine_after_must_be_positive() -> None:
    with pytest.raises(ValueError):
        AuditBook(quarantine_after=0)


async def test_real_traffic_evidence_keeps_no_tokens_unless_allowed() -> None:
    book = AuditBook()
    entry = await book.record(
        peer_id="lp-x", model="m", verdict=FAIL, source="traffic", keep_tokens=False
    )
    (finding,) = entry.findings
    assert (finding.claimed, finding.reference, finding.position) == ("", "", 3)
    kept = await book.record(peer_id="lp-x", model="m", verdict=FAIL, source="probe")
    assert kept.findings[0].claimed == " Visit"


async def test_evidence_is_stored_and_quarantine_survives_a_restart(
    lichen_db: AsyncEngine,
) -> None:
    store = AuditStore(lichen_db)
    clock = ManualClock()
    book = AuditBook(quarantine_after=2, save=store.save, clock=clock)
    await book.record(peer_id="lp-bad", model="m", verdict=FAIL, probe_id="p007")
    clock.now += 1
    await book.record(peer_id="lp-bad", model="m", verdict=FAIL, probe_id="p008")
    await book.record(peer_id="lp-ok", model="m", verdict=PASS, probe_id="p009")
    async with lichen_db.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT peer_id, probe_id, passed, evidence, data_class"
                    " FROM audit_records ORDER BY id"
                )
            )
        ).all()
    assert [(r[0], r[1], bool(r[2])) for r in rows] == [
        ("lp-bad", "p007", False),
        ("lp-bad", "p008", False),
        ("lp-ok", "p009", True),
    ]
    assert {r[4] for r in rows} == {"node_manifest"}
    assert json.loads(rows[0][3])[0]["claimed"] == " Visit"
    restarted = AuditBook(quarantine_after=2)
    restarted.load(await store.load())
    assert restarted.quarantined("lp-bad") and not restarted.quarantined("lp-ok")
    shown = audit_json(restarted.node("lp-bad"), recent=1)
    assert shown is not None and shown["failed"] == 2
    assert shown["recent"][0]["probe_id"] == "p008"
    assert shown["recent"][0]["findings"][0]["reference"] == "<end>"


def test_stored_evidence_that_is_not_json_reads_as_none() -> None:
    assert findings_from("not json") == ()
    assert findings_from('{"a": 1}') == ()
    assert findings_from('[1, {"kind": "usage", "score": 3}]')[0].kind == "usage"


class Records:
    def __init__(self, book: AuditBook) -> None:
        self.book = book

    def record_of(self, peer_id: str, *, recent: int = 0) -> dict[str, object] | None:
        return audit_json(self.book.node(peer_id), recent=recent)

    def records(self, *, recent: int = 0) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for peer, record in self.book.snapshot().items():
            shown = audit_json(record, recent=recent)
            if shown is not None:
                out[peer] = shown
        return out


class _Tracker:
    """What ``mount_tracker`` reads of a tracker: its registry and its link endpoint."""

    def __init__(self) -> None:
        self.registry = Registry()

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.close()


@pytest.fixture
def audited_app() -> tuple[FastAPI, AuditBook]:
    book = AuditBook()
    app = FastAPI()
    install_error_handlers(app)
    mount_tracker(app, cast(TrackerService, _Tracker()), audits=Records(book))
    return app, book


async def test_audits_route_filters_by_peer_and_bounds_its_query(
    audited_app: tuple[FastAPI, AuditBook],
) -> None:
    app, book = audited_app
    await book.record(peer_id="lp-aaa", model="m", verdict=FAIL, probe_id="p001")
    await book.record(peer_id="lp-bbb", model="m", verdict=PASS, probe_id="p002")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        everything = (await client.get(AUDITS_PATH)).json()
        assert everything["enabled"] and set(everything["nodes"]) == {"lp-aaa", "lp-bbb"}
        one = (await client.get(AUDITS_PATH, params={"peer": "lp-a", "recent": 1})).json()
        assert list(one["nodes"]) == ["lp-aaa"]
        assert one["nodes"]["lp-aaa"]["recent"][0]["findings"][0]["kind"] == "token"
        for bad in ({"recent": "-1"}, {"recent": "999"}, {"peer": "x" * 500}, {"recent": "x"}):
            response = await client.get(AUDITS_PATH, params=bad)
            assert response.status_code in (400, 422), bad
        network = await client.get(NETWORK_PATH)
        assert network.status_code == 200 and network.json()["nodes"] == []
