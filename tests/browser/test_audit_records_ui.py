"""The network dashboard's live audit records in Debian's Chromium (issue 11).

A real tracker and gateway on loopback run in a background thread with the audit
book; nodes join over the real wire (scripted engines: what is shown does not
depend on the model). Verdicts are recorded directly, so the test does not wait
for probes at random times; the page's 2-second poll must then redraw the record.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Page, expect

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from fakes import FakeEngine, LocalNetwork

from lichen.audit.service import AuditService
from lichen.audit.verifier import Finding, Verdict
from lichen.web import WebDeps, install_web

pytestmark = pytest.mark.browser

T = TypeVar("T")


class Dashboard:
    """A LocalNetwork with the web UI and an audit book, on its own event loop."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=60)

    async def start(self) -> None:
        self.net = await LocalNetwork(self.root).start()
        self.audits = AuditService.build(models=[], nodes=lambda: list(self.net.tracker.registry))
        install_web(
            self.net.app, WebDeps(self.net.tracker.registry, self.root / "data", audits=self.audits)
        )
        self.honest = (await self.net.add_node(FakeEngine(), "honest")).peer_id
        self.liar = (await self.net.add_node(FakeEngine(), "liar")).peer_id
        for _ in range(2):
            await self.record(self.honest, Verdict(True))

    async def record(self, peer_id: str, verdict: Verdict) -> None:
        await self.audits.book.record(peer_id=peer_id, model="m", verdict=verdict)

    def close(self) -> None:
        try:
            self.run(self.net.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
            self.loop.close()


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    board = Dashboard(tmp_path)
    try:
        board.run(board.start())
        yield board
    finally:
        board.close()


def failing(detail: str) -> Verdict:
    return Verdict(False, (Finding("usage", detail, claimed="<i>tok-9c</i>", score=4.0),))


def test_the_network_page_shows_audit_records_and_redraws_them_live(
    dashboard: Dashboard, page: Page, screenshot: Callable[[Page, str], Path]
) -> None:
    page.goto(dashboard.net.url + "/network")
    table = page.locator("#nodes-table")
    expect(table.get_by_role("columnheader", name="Audits")).to_be_visible()
    honest = page.locator(f'tr[data-peer="{dashboard.honest}"] td.audit')
    liar = page.locator(f'tr[data-peer="{dashboard.liar}"] td.audit')
    expect(honest).to_have_text("2 passed")
    expect(liar).to_have_text("not audited yet")

    for claimed in (9, 12):  # two failed audits: the liar is quarantined
        dashboard.run(
            dashboard.record(dashboard.liar, failing(f"claimed {claimed} tokens, 3 seen"))
        )
    # the page's poll redraws the rows from /ui/api/network (network.js)
    expect(liar).to_contain_text("2 of 2 failed", timeout=15_000)
    expect(liar.locator(".audit-quarantined")).to_have_text("quarantined")
    expect(liar.locator(".audit-evidence")).to_have_text(
        " · last failure: usage: claimed 12 tokens, 3 seen"
    )
    expect(honest).to_have_text("2 passed")
    assert "tok-9c" not in page.content()  # token text never reaches the page
    screenshot(page, "network-audits")
