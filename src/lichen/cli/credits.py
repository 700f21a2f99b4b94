"""``lichen credits`` (balances, history, operator grants) and ``lichen ledger verify``.

Both work on the operator's database (``LICHEN_DATABASE_URL`` or the data dir's
SQLite) and are safe while the tracker runs: the ledger serialises appends in the
database. Grants and verification use the network key in ``<data dir>/keys``.

``lichen credits grant ... --url URL`` grants from any machine instead, through
that gateway's admin API with an operator key (:mod:`lichen.cli._remote`).
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.core import TyperGroup

from lichen.accounts.service import AccountService
from lichen.cli._operator import TrackerDataDir, fail, operator_settings
from lichen.cli._remote import CaFile, OperatorKey, RemoteUrl, admin_client
from lichen.config import Settings
from lichen.errors import LichenError
from lichen.identity.keys import load_key
from lichen.identity.signing import public_raw
from lichen.identity.store import KEYS_DIR
from lichen.ledger.names import is_ledger_account, owner_account
from lichen.ledger.pricing import MICRO_PER_CREDIT, format_credits
from lichen.ledger.service import Ledger
from lichen.ledger.verify import verify_ledger
from lichen.storage.engine import create_engine, migrate


class _ShowByDefault(TyperGroup):
    """``lichen credits [ACCOUNT]`` means ``lichen credits show [ACCOUNT]``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["show", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_ShowByDefault,
    help="Credit balances and history; operator grants.",
    no_args_is_help=False,
)
ledger_app = typer.Typer(help="The credit ledger: verify its integrity.", no_args_is_help=True)


def _key(settings: Settings, name: str) -> Ed25519PrivateKey | None:
    path = settings.data_dir / KEYS_DIR / name
    return load_key(path) if path.exists() else None


async def _resolve(settings: Settings, account: str | None, accounts: AccountService) -> str:
    """A ledger account from a ledger name, a username, or (none) this machine's owner key."""
    if account is None:
        owner = _key(settings, "account.key")
        if owner is None:
            raise fail(f"no account key in {settings.data_dir / KEYS_DIR}; name an ACCOUNT")
        return owner_account(public_raw(owner))
    if is_ledger_account(account):
        return account
    found = await accounts.by_username(account)
    if found is None:
        raise fail(f"no ledger account or user named {account!r}")
    return found.ledger_account


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


async def _show(settings: Settings, account: str | None, limit: int, as_json: bool) -> None:
    await migrate(settings.database)
    engine = create_engine(settings.database)
    try:
        name = await _resolve(settings, account, AccountService(engine))
        # Reading needs no key; a throwaway one keeps Ledger's signature simple.
        ledger = Ledger(engine, Ed25519PrivateKey.generate())
        balance = await ledger.balance(name)
        pending = await ledger.pending(name)
        history = await ledger.history(name, limit=limit)
    finally:
        await engine.dispose()
    rows: list[dict[str, Any]] = [
        {
            "seq": e.seq,
            "recorded_ms": e.recorded_ms,
            "kind": e.kind,
            "amount": e.amount if e.credit == name else -e.amount,
            "counterparty": e.debit if e.credit == name else e.credit,
            "memo": e.memo,
        }
        for e in history
    ]
    if as_json:
        shown = {"account": name, "balance": balance, "available": balance, "pending": pending}
        typer.echo(json.dumps(shown | {"history": rows}, indent=2))
        return
    typer.echo(f"account  {name}")
    typer.echo(f"balance  {format_credits(balance)} credits ({balance} micro-credits)")
    typer.echo(f"  available  {format_credits(balance)}")
    typer.echo(
        f"  pending    {format_credits(pending)} (in escrow until the jobs' audit windows close)"
    )
    if not rows:
        typer.echo("history  (none)")
        return
    typer.echo(f"history  (newest {len(rows)})")
    for row in rows:
        amount = row["amount"]
        sign = "+" if amount >= 0 else "-"
        memo = f"  {row['memo']}" if row["memo"] else ""
        typer.echo(
            f"  #{row['seq']:<6} {_when(row['recorded_ms'])}  {row['kind']:<7} "
            f"{sign}{format_credits(abs(amount))}  {row['counterparty']}{memo}"
        )


@app.command("show")
def show_command(
    account: Annotated[
        str | None,
        typer.Argument(help="username, or a ledger account (user:…, owner:…); default: this node"),
    ] = None,
    limit: Annotated[int, typer.Option(help="History entries to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: TrackerDataDir = None,
) -> None:
    """Balance (available, and pending in escrow) and history of ACCOUNT (default: the
    owner of this machine's node)."""
    asyncio.run(_show(operator_settings(data_dir), account, limit, as_json))


def _micro(amount: str, micro: bool) -> int:
    try:
        value = Decimal(amount) if not micro else Decimal(int(amount))
    except (InvalidOperation, ValueError):
        raise fail(f"not an amount: {amount!r}") from None
    scaled = value if micro else value * MICRO_PER_CREDIT
    if scaled != scaled.to_integral_value() or scaled <= 0:
        raise fail("the amount must be positive, with at most 6 decimals")
    return int(scaled)


async def _grant(settings: Settings, account: str, amount: int, reason: str) -> None:
    key = _key(settings, "network.key")
    if key is None:
        raise fail(f"no network key in {settings.data_dir / KEYS_DIR}: only the operator grants")
    await migrate(settings.database)
    engine = create_engine(settings.database)
    try:
        name = await _resolve(settings, account, AccountService(engine))
        ledger = Ledger(engine, key)
        try:
            entry = await ledger.grant(name, amount, reason=reason)
        except LichenError as error:
            raise fail(error.message) from None
        balance = await ledger.balance(name)
    finally:
        await engine.dispose()
    typer.echo(
        f"granted {format_credits(amount)} credits to {name} (entry #{entry.seq}, "
        f"{entry.entry_hash[:16]}…); balance now {format_credits(balance)}"
    )


@app.command("grant")
def grant_command(
    account: Annotated[str, typer.Argument(help="username, or a ledger account")],
    amount: Annotated[str, typer.Argument(help="credits, e.g. 5 or 0.25")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the ledger).")],
    micro: Annotated[
        bool, typer.Option("--micro", help="AMOUNT is in micro-credits (integer).")
    ] = False,
    data_dir: TrackerDataDir = None,
    url: RemoteUrl = None,
    operator_key: OperatorKey = None,
    ca_file: CaFile = None,
) -> None:
    """Grant new credits (operator only): the one way the total in circulation grows."""
    micro_amount = _micro(amount, micro)
    if url is None:
        asyncio.run(_grant(operator_settings(data_dir), account, micro_amount, reason))
        return
    client = admin_client(url, operator_key, ca_file)
    body = {"account": account, "amount": micro_amount, "reason": reason}
    granted = client.post("/credits/grants", body)
    typer.echo(
        f"granted {format_credits(granted['amount'])} credits to {granted['account']} "
        f"(entry #{granted['seq']}, {granted['entry_hash'][:16]}…); balance now "
        f"{format_credits(granted['balance'])}"
    )


async def _verify(settings: Settings, extra_keys: list[bytes]) -> int:
    trusted = list(extra_keys)
    key = _key(settings, "network.key")
    if key is not None:
        trusted.append(public_raw(key))
    if not trusted:
        raise fail("no network key to check signatures against: pass --trust-key HEX")
    await migrate(settings.database)
    engine = create_engine(settings.database)
    try:
        report = await verify_ledger(engine, trusted)
    finally:
        await engine.dispose()
    if report.ok:
        typer.echo(
            f"ledger ok: {report.entries} entries, {report.receipts} receipts; "
            f"head #{report.head_seq} {report.head_hash}"
        )
        return 0
    typer.echo(f"LEDGER FAILED VERIFICATION: {len(report.problems)} problem(s)", err=True)
    for problem in report.problems:
        where = f"entry #{problem.seq}" if problem.seq is not None else "ledger"
        typer.echo(f"- {where}: {problem.reason}", err=True)
        if problem.entry is not None:
            typer.echo("  " + json.dumps(problem.entry, sort_keys=True), err=True)
    return 1


def _hex_key(value: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise typer.BadParameter("not hex") from None
    if len(raw) != 32:
        raise typer.BadParameter("a network key is 32 bytes (64 hex characters)")
    return raw


@ledger_app.command("verify")
def verify_command(
    trust_key: Annotated[
        list[str] | None,
        typer.Option("--trust-key", help="Another trusted network public key (hex)."),
    ] = None,
    data_dir: TrackerDataDir = None,
) -> None:
    """Re-check every signature, the hash chain and the balances; exit 1 on any problem."""
    keys = [_hex_key(k) for k in trust_key or []]
    code = asyncio.run(_verify(operator_settings(data_dir), keys))
    raise typer.Exit(code)


__all__ = ["app", "ledger_app"]
