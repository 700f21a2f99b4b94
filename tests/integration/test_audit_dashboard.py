"""Each node's audit record on the web dashboard (/network and its JSON poll) and in
/v1/network: counts, quarantine and the latest failure's findings, never token text."""

from __future__ import annotations

from pathlib import Path

from fakes import FakeEngine, LocalNetwork

from lichen.audit.service import AuditService
from lichen.audit.verifier import Finding, Verdict
from lichen.tracker.api import mount_tracker
from lichen.web import WebDeps, install_web

# Token text a node produced: evidence the dashboard must never show (it may be a
# real request's answer, and it is node output: hostile markup included).
SECRET_TOKEN = "<b>tok-7f3a</b>"


def audits_for(net: LocalNetwork) -> AuditService:
    return AuditService.build(models=[], nodes=lambda: list(net.tracker.registry))


def failing(kind: str, detail: str) -> Verdict:
    finding = Finding(kind, detail, position=3, claimed=SECRET_TOKEN, reference="The", score=9.5)
    return Verdict(False, (finding,), positions=12, max_margin=9.5)


async def test_the_dashboard_shows_each_nodes_audit_record(
    net: LocalNetwork, tmp_path: Path
) -> None:
    audits = audits_for(net)
    deps = WebDeps(net.tracker.registry, tmp_path / "data", audits=audits)
    install_web(net.app, deps)
    mount_tracker(net.app, net.tracker, audits=audits)
    honest = await net.add_node(FakeEngine(), "alpha")
    liar = await net.add_node(FakeEngine(), "beta")
    fresh = await net.add_node(FakeEngine(), "gamma")
    book = audits.book
    for _ in range(3):
        await book.record(peer_id=honest.peer_id, model="m", verdict=Verdict(True))
    await book.record(peer_id=liar.peer_id, model="m", verdict=Verdict(True))
    await book.record(
        peer_id=liar.peer_id, model="m", verdict=failing("token", "a token never offered")
    )
    await book.record(
        peer_id=liar.peer_id,
        model="m",
        verdict=failing("usage", "claimed 40 completion tokens, the text has 12"),
    )
    assert audits.quarantined(liar.peer_id)

    data = (await net.client.get("/ui/api/network")).json()
    assert data["audits_on"] is True
    rows = {n["name"]: n for n in data["nodes"]}
    assert rows["alpha"]["audit"] == {
        "audits": 3,
        "failed": 0,
        "quarantined": False,
        "last_failure": None,
    }
    beta = rows["beta"]["audit"]
    assert (beta["audits"], beta["failed"], beta["quarantined"]) == (3, 2, True)
    assert beta["last_failure"]["findings"] == [
        {"kind": "usage", "detail": "claimed 40 completion tokens, the text has 12"}
    ]
    assert rows["gamma"]["audit"] is None  # connected, never audited

    page = await net.client.get("/network")
    assert page.status_code == 200
    html = page.text
    assert '<th scope="col">Audits</th>' in html
    assert "3 passed" in html and "2 of 3 failed" in html and "not audited yet" in html
    assert 'class="badge audit-quarantined">quarantined' in html
    assert "last failure: usage: claimed 40 completion tokens, the text has 12" in html
    for surface in (html, str(data)):
        assert "tok-7f3a" not in surface  # token text never reaches the dashboard

    deps.local_peer_id = liar.peer_id  # the node page of a node running alongside
    node_page = (await net.client.get("/node")).text
    assert 'id="node-audits"' in node_page and "2 of 3 failed" in node_page
    assert "quarantined" in node_page and "tok-7f3a" not in node_page

    network = (await net.client.get("/v1/network")).json()
    record = {n["peer_id"]: n["audit"] for n in network["nodes"]}[liar.peer_id]
    assert record["quarantined"] and record["failed"] == 2
    assert record["last_failure"]["findings"][0]["kind"] == "usage"
    assert "tok-7f3a" not in str(record)
    assert {n["peer_id"]: n["audit"] for n in network["nodes"]}[fresh.peer_id] is None


async def test_without_audits_the_dashboard_has_no_audit_column(
    net: LocalNetwork, tmp_path: Path
) -> None:
    install_web(net.app, WebDeps(net.tracker.registry, tmp_path / "data"))
    await net.add_node(FakeEngine(), "alpha")
    data = (await net.client.get("/ui/api/network")).json()
    assert data["audits_on"] is False and data["nodes"][0]["audit"] is None
    html = (await net.client.get("/network")).text
    assert "Audits</th>" not in html and "not audited yet" not in html
    assert 'id="node-audits"' not in (await net.client.get("/node")).text
