"""Lifting an audit quarantine and the operator's sanction at quarantine.

The book (strikes, releases, the sanction hook), the stored releases a tracker
polls, ``lichen network audits PEER --release`` with hostile arguments, and the
``revoke`` sanction through the real membership tables, admission and watcher.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from lichen.audit.book import AuditBook, ReleaseEntry
from lichen.audit.release import release_node
from lichen.audit.sanctions import RevokeMembership, sanction_for
from lichen.audit.service import AuditService, audit_json
from lichen.audit.store import AuditStore
from lichen.audit.verifier import Finding, Verdict
from lichen.cli.main import app
from lichen.clock import ManualClock, now_ms
from lichen.config import Settings, load_settings
from lichen.errors import ErrorCode, LichenError
from lichen.identity.certs import (
    DeviceCertificate,
    issue_device_certificate,
    verify_device_certificate,
)
from lichen.identity.signing import generate_key, peer_id, public_raw
from lichen.identity.trust import TrustLevel
from lichen.storage.engine import create_engine, migrate
from lichen.storage.membership import MemberRecord, MembershipRepository, MemberStatus
from lichen.tracker.membership import InviteAdmission
from lichen.tracker.revocations import RevocationWatcher

FAIL = Verdict(False, (Finding("usage", "claimed 60 completion tokens, the text has 9"),))
PASS = Verdict(True, positions=9)
BAD = "lp-badbadbadbadbadbadbadbadbadbad0"
BAD2 = "lp-badbeefbadbeefbadbeefbadbeef00"
GOOD = "lp-goodgoodgoodgoodgoodgoodgood00"
runner = CliRunner()


class Sanctions:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail

    async def __call__(self, peer: str) -> None:
        self.calls.append(peer)
        if self.fail:
            raise RuntimeError("database is locked")


# --- the book -----------------------------------------------------------------------------


async def test_a_release_keeps_the_evidence_and_failures_count_again_from_zero() -> None:
    clock = ManualClock()
    sanction = Sanctions()
    book = AuditBook(quarantine_after=2, sanction=sanction, clock=clock)
    for _ in range(2):
        await book.record(peer_id=BAD, model="m", verdict=FAIL)
    assert book.quarantined(BAD) and sanction.calls == [BAD]
    await book.record(peer_id=BAD, model="m", verdict=FAIL)  # still probed while quarantined
    assert sanction.calls == [BAD]  # once per quarantine, not per failure
    clock.advance(5)
    assert book.release(BAD, by="alice", reason="reference build was wrong")
    assert not book.release(BAD)  # not quarantined any more
    assert not book.release(GOOD)  # never audited
    record = book.node(BAD)
    assert record is not None
    assert (record.audits, record.failures, record.strikes) == (3, 3, 0)
    assert record.last_failure is not None and len(record.recent) == 3  # evidence kept
    shown = audit_json(record, recent=5)
    assert shown is not None and shown["failed"] == 3 and shown["quarantined"] is False
    assert shown["released"] == {
        "created_ms": record.released.created_ms if record.released else 0,
        "by": "alice",
        "reason": "reference build was wrong",
    }
    public = audit_json(record)  # /v1/network and the dashboard: no name, no reason
    assert public is not None and set(public["released"]) == {"created_ms"}
    await book.record(peer_id=BAD, model="m", verdict=FAIL)
    assert not book.quarantined(BAD)  # one strike after the release
    await book.record(peer_id=BAD, model="m", verdict=FAIL)
    assert book.quarantined(BAD) and sanction.calls == [BAD, BAD]  # a new quarantine


async def test_failures_after_the_release_time_still_count() -> None:
    clock = ManualClock(100.0)
    book = AuditBook(quarantine_after=2, clock=clock)
    for _ in range(2):
        await book.record(peer_id=BAD, model="m", verdict=FAIL)
    released_ms = int(clock() * 1000) + 1  # the operator's CLI, at this moment
    clock.advance(1)
    await book.record(peer_id=BAD, model="m", verdict=FAIL)  # before the tracker polled
    book.apply_release(ReleaseEntry(released_ms, BAD, by="alice"))
    record = book.node(BAD)
    assert record is not None and record.strikes == 1 and not record.quarantined
    await book.record(peer_id=BAD, model="m", verdict=FAIL)
    assert book.quarantined(BAD)  # as a restart replaying the history in order would say


async def test_a_failing_sanction_leaves_the_quarantine_in_place() -> None:
    book = AuditBook(quarantine_after=1, sanction=Sanctions(fail=True))
    entry = await book.record(peer_id=BAD, model="m", verdict=FAIL)
    assert not entry.passed and book.quarantined(BAD)


async def test_loading_history_applies_releases_in_order_without_sanctions() -> None:
    sanction = Sanctions()
    book = AuditBook(quarantine_after=2, sanction=sanction)
    first = AuditBook(quarantine_after=2, clock=ManualClock(100.0))
    a = await first.record(peer_id=BAD, model="m", verdict=FAIL)
    b = await first.record(peer_id=BAD, model="m", verdict=FAIL)
    later = AuditBook(quarantine_after=2, clock=ManualClock(300.0))
    c = await later.record(peer_id=BAD, model="m", verdict=FAIL)
    release = ReleaseEntry(200_000, BAD, by="alice")
    book.load([a, b, release, c])
    assert not book.quarantined(BAD) and sanction.calls == []
    record = book.node(BAD)
    assert record is not None and (record.failures, record.strikes) == (3, 1)
    again = AuditBook(quarantine_after=2)
    again.load([a, b, c, release])  # released after all three: free
    assert not again.quarantined(BAD)


# --- the store and a running tracker --------------------------------------------------------


async def test_releases_are_stored_and_a_running_tracker_applies_them(
    lichen_db: AsyncEngine,
) -> None:
    service = AuditService.build(models=[], nodes=lambda: [], db=lichen_db)
    for _ in range(2):
        await service.book.record(peer_id=BAD, model="m", verdict=FAIL)
    assert service.quarantined(BAD)
    await service.start()  # loads the history; polls for releases (manually below)
    try:
        assert await service.poll_releases() == []
        store = AuditStore(lichen_db)
        await store.save_release(ReleaseEntry(10**13, BAD, by="alice", reason="false positive"))
        assert await service.poll_releases() == [BAD]
        assert not service.quarantined(BAD)
        assert await service.poll_releases() == []  # applied once
    finally:
        await service.stop()
    async with lichen_db.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT peer_id, released_by, reason, data_class FROM audit_releases")
            )
        ).all()
    assert [tuple(r) for r in rows] == [(BAD, "alice", "false positive", "node_manifest")]
    restarted = AuditService.build(models=[], nodes=lambda: [], db=lichen_db)
    await restarted.start()  # a tracker restart: the release holds, the evidence too
    try:
        assert not restarted.quarantined(BAD)
        record = restarted.record_of(BAD)
        assert record is not None and record["failed"] == 2
    finally:
        await restarted.stop()


# --- the CLI ------------------------------------------------------------------------------


def record_audits(settings: Settings, *, pending_member: str = "") -> None:
    async def write() -> None:
        await migrate(settings.database)
        engine = create_engine(settings.database)
        try:
            book = AuditBook(save=AuditStore(engine).save)
            for peer in (BAD, BAD, BAD2, BAD2):
                await book.record(peer_id=peer, model="smollm2-135m", verdict=FAIL)
            await book.record(peer_id=GOOD, model="smollm2-135m", verdict=PASS)
            members = MembershipRepository(engine)
            await members.join(member(BAD, name="rig-7", status="revoked"), now_ms=1)
        finally:
            await engine.dispose()

    asyncio.run(write())


def member(pid: str, *, name: str, status: MemberStatus = "approved") -> MemberRecord:
    return MemberRecord(
        peer_id=pid,
        device_key=b"\x01" * 32,
        account_key=b"\x02" * 32,
        name=name,
        trust=TrustLevel.COMMUNITY,
        status=status,
        invite_id=None,
        first_seen_ms=1,
        last_seen_ms=1,
    )


def audits(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["network", "audits", *args, "--data-dir", str(data_dir)])
    return result.exit_code, result.stdout, result.stderr


def test_release_from_the_cli_by_node_name_and_then_by_prefix(tmp_path: Path) -> None:
    record_audits(load_settings(data_dir=tmp_path))
    code, out, _ = audits(tmp_path, "rig-7", "--release", "--reason", "bad reference build")
    assert code == 0, out
    assert f"released {BAD}" in out and "2 failed audits kept" in out
    assert f"lichen network approve {BAD}" in out  # revoked by the sanction: a hint
    listing = json.loads(audits(tmp_path, "--json")[1])
    assert listing[BAD]["quarantined"] is False and listing[BAD]["failed"] == 2
    assert listing[BAD2]["quarantined"] is True
    detail = json.loads(audits(tmp_path, BAD, "--json")[1])
    assert detail[BAD]["released"]["by"] and detail[BAD]["released"]["reason"] == (
        "bad reference build"
    )
    assert "released" in audits(tmp_path)[1]  # the table says so
    code, out, _ = audits(tmp_path, BAD2[:12], "--release", "--json")
    assert code == 0 and json.loads(out)["peer_id"] == BAD2 and json.loads(out)["membership"] == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lp-nobody", "--release"], "no audited node matches"),
        (["lp-bad", "--release"], "ambiguous"),  # BAD and BAD2
        ([GOOD, "--release"], "not quarantined"),
        (["--release"], "name the node"),
        (["   ", "--release"], "name the node"),
        ([BAD, "--release", "--reason", "line\nbreak"], "one line of printable text"),
        ([BAD, "--release", "--reason", "\x1b[31mred"], "one line of printable text"),
        ([BAD, "--release", "--reason", "x" * 501], "too long"),
        (["x" * 5000, "--release"], "too long"),
        ([BAD, "--reason", "why"], "--reason goes with --release"),
    ],
)
def test_release_refuses_bad_arguments_with_a_clear_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    record_audits(load_settings(data_dir=tmp_path))
    code, out, err = audits(tmp_path, *args)
    assert code == 1, out
    assert message in " ".join(err.split()), err
    assert "Traceback" not in out + err
    listing = json.loads(audits(tmp_path, "--json")[1])
    assert listing[BAD]["quarantined"] is True  # nothing was released


def test_a_node_name_without_audits_is_reported(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    record_audits(settings)

    async def add() -> None:
        engine = create_engine(settings.database)
        try:
            await MembershipRepository(engine).join(member(GOOD[:-1] + "9", name="quiet"), now_ms=1)
        finally:
            await engine.dispose()

    asyncio.run(add())
    with pytest.raises(LichenError) as caught:
        asyncio.run(release_node(settings, "quiet", by="alice"))
    assert (
        caught.value.code is ErrorCode.NOT_FOUND and "has no audit record" in caught.value.message
    )


# --- the revoke sanction -------------------------------------------------------------------


def test_the_sanction_setting() -> None:
    assert Settings().audit_sanction == "quarantine"
    assert Settings(audit_sanction="revoke").audit_sanction == "revoke"
    with pytest.raises(ValidationError):
        Settings(audit_sanction="shoot")  # type: ignore[arg-type]


def device(name: str = "rig") -> DeviceCertificate:
    now = now_ms()
    raw = issue_device_certificate(
        generate_key(), public_raw(generate_key()), name=name, now_ms=now
    )
    return verify_device_certificate(raw, now_ms=now)


async def test_revoke_sanction_revokes_like_the_cli_and_the_tracker_drops_and_refuses(
    lichen_db: AsyncEngine,
) -> None:
    members = MembershipRepository(lichen_db)
    admission = InviteAdmission(members, network_key=b"\x03" * 32, mode="public")
    cert = device()
    pid = peer_id(cert.device_key)
    assert await admission.admit(cert, "", "10.0.0.1:5000")  # joins, remembered as approved
    assert sanction_for("quarantine", lichen_db) is None
    sanction = sanction_for("revoke", lichen_db)
    assert isinstance(sanction, RevokeMembership)
    book = AuditBook(quarantine_after=2, sanction=sanction)
    dropped: list[tuple[str, ErrorCode]] = []

    async def disconnect(peer: str, error: LichenError) -> bool:
        dropped.append((peer, error.code))
        return True

    watcher = RevocationWatcher(members, disconnect, forget=admission.forget)
    await book.record(peer_id=pid, model="m", verdict=FAIL)
    stored = await members.member(pid)
    assert stored is not None and stored.status == "approved"  # one failure: nothing yet
    await book.record(peer_id=pid, model="m", verdict=FAIL)
    stored = await members.member(pid)
    assert stored is not None and stored.status == "revoked"
    assert await watcher.poll_once() == [pid]  # the running tracker's watcher drops it
    assert dropped == [(pid, ErrorCode.IDENTITY_REVOKED)]
    with pytest.raises(LichenError) as caught:  # and refuses it on reconnect
        await admission.admit(cert, "", "10.0.0.1:5001")
    assert caught.value.code is ErrorCode.IDENTITY_REVOKED
    await sanction("lp-not-a-member")  # nothing to revoke: logged, not raised
