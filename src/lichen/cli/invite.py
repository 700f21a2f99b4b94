"""``lichen invite``: create, list and revoke invites to this tracker's network.

Run on the tracker's machine, against its data dir: the token is signed with the
network key there, and its terms (roles, uses, expiry) go into the tracker's
database, which enforces them. The token itself is printed once and not stored.

From any other machine, the same through a gateway's or tracker's admin API:
``--url URL`` with an operator key (``--operator-key`` or ``LICHEN_OPERATOR_KEY``;
see :mod:`lichen.cli._remote`). On ``invite create`` only, ``--url`` without an
operator key keeps its older meaning: the tracker URL nodes dial (``--tracker-url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from lichen.cli._operator import (
    TrackerDataDir,
    fail,
    membership,
    operator_settings,
    parse_duration,
    until,
)
from lichen.cli._remote import (
    AdminClient,
    CaFile,
    OperatorKey,
    RemoteUrl,
    admin_client,
    segment,
)
from lichen.clock import now_ms
from lichen.errors import LichenError
from lichen.identity.invites import create_invite, parse_invite
from lichen.identity.store import load_identity
from lichen.roles.tracker import node_url, read_tracker_info
from lichen.storage.membership import InviteRecord

app = typer.Typer(help="Create, list and revoke invites for nodes.", no_args_is_help=True)


@app.command("create")
def create_command(
    max_uses: Annotated[
        int, typer.Option("--max-uses", min=0, help="How many nodes may join with it (0 = any).")
    ] = 1,
    expires: Annotated[
        str, typer.Option("--expires", help="Lifetime, e.g. 30m, 24h, 7d, or 'never'.")
    ] = "24h",
    role: Annotated[
        list[str] | None, typer.Option("--role", help="Role granted (repeatable).")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="With an operator key: the gateway or tracker to create it on (admin API). "
            "Without one: the tracker URL nodes dial, like --tracker-url.",
        ),
    ] = None,
    tracker_urls: Annotated[
        list[str] | None,
        typer.Option(
            "--tracker-url",
            help="Tracker URL nodes dial (default: the tracker's); repeat for a network with "
            "several trackers: nodes dial the next when one is down.",
        ),
    ] = None,
    operator_key: OperatorKey = None,
    ca_file: CaFile = None,
    data_dir: TrackerDataDir = None,
) -> None:
    """Create an invite and print its token (share it with the node's owner)."""
    try:
        ttl_s = parse_duration(expires)
    except ValueError:
        raise fail(f"--expires: cannot read {expires!r} (try 30m, 24h, 7d or never)") from None
    tracker_url = tracker_urls[0] if tracker_urls else None
    if url is not None and operator_key:
        body: dict[str, object] = {"max_uses": max_uses, "expires_s": ttl_s}
        body |= {"roles": role or ["node"], "other_tracker_urls": (tracker_urls or [])[1:]}
        _create_remote(
            admin_client(url, operator_key, ca_file),
            body | ({"tracker_url": tracker_url} if tracker_url else {}),
        )
        return
    url = tracker_url or url
    settings = operator_settings(data_dir)
    identity = load_identity(settings.data_dir)
    info = read_tracker_info(settings.data_dir)
    tracker_url = (
        url
        or settings.public_url
        or (info.node_url if info is not None else node_url(None, settings.host, settings.port))
    )
    roles = role or ["node"]
    try:
        token = create_invite(
            identity.network_key,
            tracker_url=tracker_url,
            roles=roles,
            max_uses=max_uses,
            ttl_s=ttl_s,
            now_ms=now_ms(),
            other_tracker_urls=(tracker_urls or [])[1:],
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    invite = parse_invite(token)
    record = InviteRecord.of(invite)

    async def store() -> None:
        async with membership(settings) as members:
            await members.add_invite(record)

    asyncio.run(store())
    node_dir = node_data_dir(settings.data_dir, invite.invite_id)
    _created(token, record, tracker_url, node_dir, hint="--tracker-url")


def _create_remote(client: AdminClient, body: dict[str, object]) -> None:
    created = client.post("/invites", body)
    record = _invite_record(created["invite"])
    node_dir = node_data_dir(Path("~/.local/share/lichen"), record.id)
    _created(created["token"], record, created["tracker_url"], node_dir, hint="--tracker-url")


def _created(token: str, invite: InviteRecord, tracker_url: str, node_dir: str, hint: str) -> None:
    err = Console(stderr=True)
    max_uses = invite.max_uses
    uses = "unlimited uses" if not max_uses else f"{max_uses} use{'s' * (max_uses != 1)}"
    err.print(
        f"invite {invite.id[:12]} for {', '.join(invite.roles)}: {uses}, expires "
        f"{until(invite.expires_ms)}, tracker {tracker_url}",
        highlight=False,
    )
    err.print(
        "join with the token printed below (every node needs its own --data-dir: one shared "
        "with the tracker or another node has the same identity, and the tracker refuses "
        "the second):",
        highlight=False,
    )
    err.print(
        f"  lichen node --data-dir {node_dir} --join TOKEN",
        highlight=False,
        soft_wrap=True,  # one line however wide: it is copied whole
    )
    if urlsplit(tracker_url).hostname in ("127.0.0.1", "localhost", "::1"):
        err.print(
            "note: the token points at a loopback address, which only nodes on this machine "
            f"can reach; for other machines pass {hint} (or start the tracker with "
            "--public-url)",
            highlight=False,
        )
    typer.echo(token)


def _invite_record(row: dict[str, Any]) -> InviteRecord:
    """An invite as the admin API lists it."""
    return InviteRecord(
        id=row["id"],
        roles=tuple(row["roles"]),
        max_uses=row["max_uses"],
        uses=row["uses"],
        expires_ms=row["expires_ms"],
        created_ms=row["created_ms"],
        revoked=row["state"] == "revoked",
    )


def node_data_dir(tracker_dir: Path, invite_id: str) -> str:
    """A data dir for the invited node that differs from the tracker's (``~`` kept short)."""
    path = tracker_dir.expanduser().with_name(f"{tracker_dir.name}-node-{invite_id[:6]}")
    home = Path.home()
    with contextlib.suppress(ValueError):
        return "~/" + shlex.quote(str(path.relative_to(home)))
    return shlex.quote(str(path))


@app.command("list")
def list_command(
    data_dir: TrackerDataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    url: RemoteUrl = None,
    operator_key: OperatorKey = None,
    ca_file: CaFile = None,
) -> None:
    """List invites with their uses and state."""
    if url is not None:
        listed = admin_client(url, operator_key, ca_file).get("/invites")
        invites = [_invite_record(row) for row in listed["data"]]
    else:
        settings = operator_settings(data_dir)

        async def load() -> list[InviteRecord]:
            async with membership(settings) as members:
                return await members.invites()

        invites = asyncio.run(load())
    now = now_ms()
    if as_json:
        rows = [
            {
                "id": i.id,
                "roles": list(i.roles),
                "uses": i.uses,
                "max_uses": i.max_uses,
                "expires_ms": i.expires_ms,
                "created_ms": i.created_ms,
                "state": i.state(now),
            }
            for i in invites
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not invites:
        Console(stderr=True).print("No invites yet. Create one with `lichen invite create`.")
        return
    table = Table("ID", "ROLES", "USES", "EXPIRES", "STATE", box=None)
    for i in invites:
        uses = f"{i.uses}/{i.max_uses}" if i.max_uses else f"{i.uses}/unlimited"
        table.add_row(i.id[:12], ",".join(i.roles), uses, until(i.expires_ms, now), i.state(now))
    Console().print(table)


@app.command("revoke")
def revoke_command(
    invite_id: Annotated[str, typer.Argument(help="Invite id (or a unique prefix of it).")],
    data_dir: TrackerDataDir = None,
    url: RemoteUrl = None,
    operator_key: OperatorKey = None,
    ca_file: CaFile = None,
) -> None:
    """Revoke an invite: nobody new can join with it (members it admitted stay)."""
    if url is not None:
        client = admin_client(url, operator_key, ca_file)
        revoked_row = client.post(f"/invites/{segment(invite_id.strip())}/revoke")
        typer.echo(f"revoked invite {revoked_row['id'][:12]}")
        return
    settings = operator_settings(data_dir)

    async def revoke() -> str:
        async with membership(settings) as members:
            invite = await members.find_invite(invite_id)
            await members.revoke_invite(invite.id)
            return invite.id

    try:
        revoked = asyncio.run(revoke())
    except LichenError as error:
        raise fail(error.message) from None
    typer.echo(f"revoked invite {revoked[:12]}")
