"""``lichen network audits [PEER]``: each node's audit record and evidence, from the tracker's DB.

Reads the ``audit_records`` table directly (like the membership commands), so it
works whether or not the tracker is running. With a peer (or a prefix of its id)
it also prints that node's recent audits and the evidence of the failed ones.

``--release`` lifts a node's quarantine after the operator found the failures were
a false positive: it writes an ``audit_releases`` row (who, when, why; the evidence
stays), which a running tracker applies within ``membership_poll_s``, the way
``lichen network revoke`` reaches it.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lichen.audit.book import AuditBook
from lichen.audit.release import release_node
from lichen.audit.service import audit_json
from lichen.audit.store import AuditStore
from lichen.cli._operator import TrackerDataDir, ago, fail, operator_settings
from lichen.clock import now_ms
from lichen.config import Settings
from lichen.errors import LichenError
from lichen.storage.engine import create_engine, migrate

RECENT = 10


async def _records(settings: Settings) -> dict[str, dict[str, Any]]:
    await migrate(settings.database)
    engine = create_engine(settings.database)
    try:
        entries, _ = await AuditStore(engine).history()
    finally:
        await engine.dispose()
    book = AuditBook(quarantine_after=settings.audit_quarantine_after)
    book.load(entries)
    out: dict[str, dict[str, Any]] = {}
    for peer, record in sorted(book.snapshot().items()):
        shown = audit_json(record, recent=RECENT)
        if shown is not None:
            out[peer] = shown
    return out


def audits_command(
    peer: Annotated[
        str, typer.Argument(help="A peer id (or its prefix) to show in detail (or to --release).")
    ] = "",
    data_dir: TrackerDataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    release: Annotated[
        bool,
        typer.Option(
            "--release",
            help="Lift PEER's audit quarantine (a false positive); the evidence is kept.",
        ),
    ] = False,
    reason: Annotated[
        str, typer.Option("--reason", help="Why the quarantine is lifted (kept with the release).")
    ] = "",
) -> None:
    """Audit records of the nodes: audits, failures, quarantine, evidence; --release one."""
    settings = operator_settings(data_dir)
    if release:
        _release(settings, peer, reason, as_json=as_json)
        return
    if reason:
        raise fail("--reason goes with --release")
    records = asyncio.run(_records(settings))
    if peer:
        records = {p: r for p, r in records.items() if p.startswith(peer)}
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    console = Console()
    if not records:
        console.print("No audits recorded" + (f" for {peer}." if peer else "."))
        return
    console.print(summary_table(records))
    if peer:
        for peer_id, record in records.items():
            console.print(f"[bold]{peer_id}[/bold]: recent audits")
            console.print(recent_table(record.get("recent", [])))


def _operator_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in this environment
        return "operator"


def _release(settings: Settings, peer: str, reason: str, *, as_json: bool) -> None:
    try:
        result = asyncio.run(release_node(settings, peer, by=_operator_name(), reason=reason))
    except LichenError as error:
        raise fail(error.message) from None
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
        return
    typer.echo(
        f"released {result.peer_id} from audit quarantine ({result.failed} failed audits kept)"
    )
    if result.membership == "revoked":
        typer.echo(
            f"its membership is revoked: to let it rejoin, run "
            f"lichen network approve {result.peer_id}"
        )


def summary_table(records: dict[str, dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False)
    table.add_column("PEER", no_wrap=True)
    for header in ("AUDITS", "FAILED", "QUARANTINED", "FORFEITED", "LAST"):
        table.add_column(header, no_wrap=True)
    now = now_ms()
    for peer_id, r in records.items():
        table.add_row(
            peer_id,
            str(r["audits"]),
            str(r["failed"]),
            "yes" if r["quarantined"] else ("released" if r.get("released") else "no"),
            str(r["forfeited"]),
            ago(int(r["last_ms"]), now) if r["last_ms"] else "-",
        )
    return table


def recent_table(recent: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False)
    for header in ("WHEN", "SOURCE", "PROBE", "MODE", "RESULT", "EVIDENCE"):
        table.add_column(header, overflow="fold")
    now = now_ms()
    for e in reversed(recent):
        evidence = "; ".join(_finding(f) for f in e["findings"])
        table.add_row(
            ago(int(e["created_ms"]), now),
            e["source"],
            e["probe_id"] or "-",
            e["mode"],
            "pass" if e["passed"] else "FAIL",
            evidence or f"max margin {e['max_margin']}, z {e['z']}",
        )
    return table


def _finding(f: dict[str, Any]) -> str:
    where = f" at token {f['position']}" if f["position"] >= 0 else ""
    tokens = (
        f" (node {f['claimed']!r}, reference {f['reference']!r})"
        if f["claimed"] or f["reference"]
        else ""
    )
    return f"{f['kind']}{where}{tokens}: {f['detail']} [{f['score']}]"
