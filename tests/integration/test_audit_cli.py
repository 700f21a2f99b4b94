"""``lichen network audits [PEER]``: audit records and evidence from the tracker's database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from lichen.audit.book import AuditBook
from lichen.audit.store import AuditStore
from lichen.audit.verifier import Finding, Verdict
from lichen.cli.main import app
from lichen.storage.engine import create_engine, migrate

runner = CliRunner()
BAD = "lp-badbadbadbadbadbadbadbadbadbad0"
GOOD = "lp-goodgoodgoodgoodgoodgoodgood00"


def record_audits(data_dir: Path) -> None:
    async def write() -> None:
        url = f"sqlite+aiosqlite:///{data_dir / 'lichen.db'}"
        await migrate(url)
        engine = create_engine(url)
        try:
            book = AuditBook(save=AuditStore(engine).save)
            bad = Verdict(
                False,
                (Finding("usage", "claimed 60 completion tokens, the text has 9", score=50.0),),
            )
            for probe in ("p001", "p002"):
                await book.record(peer_id=BAD, model="smollm2-135m", verdict=bad, probe_id=probe)
            await book.record(peer_id=GOOD, model="smollm2-135m", verdict=Verdict(True))
        finally:
            await engine.dispose()

    asyncio.run(write())


def lichen(data_dir: Path, *args: str) -> str:
    result = runner.invoke(app, ["network", "audits", *args, "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_no_audits_yet(tmp_path: Path) -> None:
    assert "No audits recorded" in lichen(tmp_path)


def test_audits_list_every_node_and_detail_one(tmp_path: Path) -> None:
    record_audits(tmp_path)
    listing = lichen(tmp_path)
    assert BAD in listing and GOOD in listing and "yes" in listing
    detail = lichen(tmp_path, BAD[:8])
    assert "FAIL" in detail and "usage" in detail and "p002" in detail
    assert GOOD not in detail
    as_json = json.loads(lichen(tmp_path, "--json"))
    assert as_json[BAD]["quarantined"] is True and as_json[BAD]["failed"] == 2
    assert as_json[GOOD]["quarantined"] is False
    assert lichen(tmp_path, "lp-nobody").startswith("No audits recorded")
