"""``lichen network``: members, live nodes and models; approve and revoke nodes.

Membership comes from the tracker's database; the live view (connected nodes,
their load, the models they serve) from the running tracker's ``/v1/network``.
Approving or revoking writes the database; a running tracker disconnects a
revoked node within a second (see :mod:`lichen.tracker.revocations`).

With ``--url`` and an operator key, ``show`` (members only), ``approve`` and
``revoke`` go through that gateway's or tracker's admin API instead, which writes
the same rows (:mod:`lichen.cli._remote`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from lichen.cli._operator import TrackerDataDir, ago, fail, membership, operator_settings
from lichen.cli._remote import CaFile, OperatorKey, RemoteUrl, admin_client, segment
from lichen.cli.audits import audits_command
from lichen.clock import now_ms
from lichen.config import Settings
from lichen.errors import LichenError
from lichen.http.operator import operator_headers
from lichen.roles.tracker import read_tracker_info
from lichen.server import pinned_tls
from lichen.storage.membership import MemberRecord, MemberStatus
from lichen.tracker.api import NETWORK_PATH

PEER_PREFIX = 11  # "lp-" and 8 characters: unique in practice, and accepted as a prefix

app = typer.Typer(help="Show the network; approve or revoke nodes.", no_args_is_help=True)


def live_view(settings: Settings) -> dict[str, Any] | None:
    """``GET /v1/network`` of the tracker running on this data dir, or None."""
    info = read_tracker_info(settings.data_dir)
    if info is None:
        return None
    try:
        response = httpx.get(
            info.url + NETWORK_PATH,
            timeout=3.0,
            trust_env=False,
            headers=operator_headers(settings.data_dir),  # operator surfaces may be gated
            verify=pinned_tls(Path(info.tls_certfile)) if info.tls_certfile else True,
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return body


def _member_json(m: MemberRecord) -> dict[str, Any]:
    return {
        "peer_id": m.peer_id,
        "name": m.name,
        "trust": m.trust,
        "status": m.status,
        "invite_id": m.invite_id,
        "first_seen_ms": m.first_seen_ms,
        "last_seen_ms": m.last_seen_ms,
    }


@app.command("show")
def show_command(
    data_dir: TrackerDataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    url: RemoteUrl = None,
    operator_key: OperatorKey = None,
    ca_file: CaFile = None,
) -> None:
    """Members, connected nodes and the models they serve (members only with --url)."""
    if url is not None:
        listed = admin_client(url, operator_key, ca_file).get("/members")
        remote = [_member_record(row) for row in listed["data"]]
        if as_json:
            typer.echo(json.dumps({"members": [_member_json(m) for m in remote]}, indent=2))
            return
        console = Console()
        console.print("[bold]Members[/bold]" if remote else "No members yet.")
        if remote:
            console.print(members_table(remote, {}, now_ms()))
        return
    settings = operator_settings(data_dir)

    async def load() -> list[MemberRecord]:
        async with membership(settings) as members:
            return await members.members()

    members = asyncio.run(load())
    live = live_view(settings)
    if as_json:
        typer.echo(
            json.dumps({"members": [_member_json(m) for m in members], "live": live}, indent=2)
        )
        return
    console = Console()
    console.print("[bold]Members[/bold]" if members else "No members yet.")
    connected = {n["peer_id"]: n for n in (live or {}).get("nodes", [])}
    if members:
        console.print(members_table(members, connected, now_ms()))
    if live is None:
        console.print("Tracker not running here: no live state.")
        return
    console.print(f"[bold]Connected nodes[/bold] ({live['nodes_total']})")
    console.print(nodes_table(live["nodes"]))
    served = ", ".join(f"{name} ({count})" for name, count in sorted(live["models"].items()))
    console.print(f"[bold]Models[/bold]: {served or 'none'}")


def members_table(
    members: list[MemberRecord], connected: dict[str, dict[str, Any]], now: int
) -> Table:
    """Members in 80 columns: the full peer id (copied into approve/revoke), never cut."""
    table = Table(box=None, pad_edge=False)
    table.add_column("PEER", no_wrap=True)
    table.add_column("NAME", overflow="fold")
    for header in ("TRUST", "STATUS", "LAST SEEN"):
        table.add_column(header, no_wrap=True)
    for m in members:
        live = connected.get(m.peer_id)
        name = m.name or (live["name"] if live is not None else "") or "-"
        # The database notes a member when it connects; a connected one is seen right now.
        seen = "connected" if live is not None else ago(m.last_seen_ms, now)
        table.add_row(m.peer_id, name, m.trust, m.status, seen)
    return table


def nodes_table(nodes: list[dict[str, Any]]) -> Table:
    """Connected nodes in 80 columns: a peer id prefix (``approve``/``revoke`` accept one)."""
    table = Table(box=None, pad_edge=False)
    table.add_column("NAME", overflow="fold")
    table.add_column("PEER", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("MODELS", overflow="fold")
    for header in ("FREE", "QUEUED", "TOK/S", "JOBS"):
        table.add_column(header, justify="right", no_wrap=True)
    for n in nodes:
        table.add_row(
            n["name"],
            n["peer_id"][:PEER_PREFIX],
            n["state"],
            "\n".join(m["name"] for m in n["models"]),  # one a line: wraps between names
            str(n["free_slots"]),
            str(n["queue_depth"]),
            f"{n['tokens_per_s']:.1f}",
            str(n["inflight"]),
        )
    return table


def _member_record(row: dict[str, Any]) -> MemberRecord:
    """A member as the admin API lists it (keys are not part of that view)."""
    return MemberRecord(
        peer_id=row["peer_id"],
        device_key=b"",
        account_key=b"",
        name=row["name"],
        trust=row["trust"],
        status=row["status"],
        invite_id=row["invite_id"],
        first_seen_ms=row["first_seen_ms"],
        last_seen_ms=row["last_seen_ms"],
    )


def _set_status(
    data_dir: Any, peer: str, status: MemberStatus, remote: tuple[str | None, str | None, Any]
) -> MemberRecord:
    url, operator_key, ca_file = remote
    if url is not None:
        verb = "approve" if status == "approved" else "revoke"
        client = admin_client(url, operator_key, ca_file)
        return _member_record(client.post(f"/members/{segment(peer.strip())}/{verb}"))
    settings = operator_settings(data_dir)

    async def update() -> MemberRecord:
        async with membership(settings) as members:
            member = await members.find_member(peer)
            await members.set_status(member.peer_id, status, now_ms=now_ms())
            return member

    try:
        return asyncio.run(update())
    except LichenError as error:
        raise fail(error.message) from None


@app.command("approve")
def approve_command(
    peer: Annotated[str, typer.Argument(help="Peer id (or unique prefix, or node name).")],
    data_dir: TrackerDataDir = None,
    url: RemoteUrl = None,
    operator_key: OperatorKey = None,
    ca_file: CaFile = None,
) -> None:
    """Approve a pending (or previously revoked) node; it joins on its next retry."""
    member = _set_status(data_dir, peer, "approved", (url, operator_key, ca_file))
    typer.echo(f"approved {member.peer_id} ({member.name or 'unnamed'})")


@app.command("revoke")
def revoke_command(
    peer: Annotated[str, typer.Argument(help="Peer id (or unique prefix, or node name).")],
    data_dir: TrackerDataDir = None,
    url: RemoteUrl = None,
    operator_key: OperatorKey = None,
    ca_file: CaFile = None,
) -> None:
    """Revoke a node: a running tracker disconnects it at once and refuses it from now on."""
    member = _set_status(data_dir, peer, "revoked", (url, operator_key, ca_file))
    typer.echo(f"revoked {member.peer_id} ({member.name or 'unnamed'})")


app.command("audits")(audits_command)  # lichen network audits [PEER] (lichen.cli.audits)
