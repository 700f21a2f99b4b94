"""``lichen operator``: the operator's credentials.

- ``token``: the token for the operator surfaces (/metrics, /v1/network, /docs);
- ``grant`` / ``revoke`` / ``list``: which accounts are operators, i.e. whose API
  keys (with the ``account`` scope) work on the admin API (``/v1/admin``), so that
  ``lichen invite``, ``lichen network approve|revoke`` and ``lichen credits grant``
  work from any machine with ``--url`` and ``LICHEN_OPERATOR_KEY``. These three run
  on the tracker's machine, against its database (like ``lichen credits grant``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.accounts.keys import ApiKeyService
from lichen.accounts.principal import SCOPE_ACCOUNT
from lichen.accounts.roles import AccountRoles, Role
from lichen.accounts.service import Account, AccountService
from lichen.cli._operator import TrackerDataDir, fail, operator_settings
from lichen.config import Settings
from lichen.errors import LichenError
from lichen.http.operator import TOKEN_FILE, operator_token, surfaces_mode
from lichen.storage.engine import create_engine, migrate

app = typer.Typer(
    help="Operator credentials: the surfaces token; operator accounts for the admin API."
)

Username = Annotated[str, typer.Argument(help="The account's username.")]


@app.command("token")
def token_command(data_dir: TrackerDataDir = None) -> None:
    """Print the operator token (created, mode 0600, on first use).

    Send it as ``Authorization: Bearer TOKEN`` to /metrics, /v1/network,
    /ui/api/node, /docs and /openapi.json when operator surfaces are gated
    (public networks by default; LICHEN_OPERATOR_SURFACES).
    """
    settings = operator_settings(data_dir)
    try:
        token = operator_token(settings.data_dir)
    except (LichenError, OSError) as exc:
        raise fail(exc.message if isinstance(exc, LichenError) else str(exc)) from None
    mode = surfaces_mode(settings)
    typer.echo(
        f"# {settings.data_dir / TOKEN_FILE}; operator surfaces here are {mode}"
        " (LICHEN_OPERATOR_SURFACES)",
        err=True,
    )
    typer.echo(token)


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[AsyncEngine]:
    await migrate(settings.database)
    engine = create_engine(settings.database)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _account(engine: AsyncEngine, username: str) -> Account:
    account = await AccountService(engine).by_username(username)
    if account is None or not account.active:
        raise fail(f"no active account named {username!r} (sign up in the web UI first)")
    return account


async def _set_role(settings: Settings, username: str, role: Role, key_name: str | None) -> None:
    async with _database(settings) as engine:
        account = await _account(engine, username)
        await AccountRoles(engine).set_role(account.id, role)
        secret = None
        if key_name is not None:
            try:
                made = await ApiKeyService(engine).create(
                    account.id, name=key_name, scopes=[SCOPE_ACCOUNT]
                )
            except LichenError as error:
                raise fail(error.message) from None
            secret = made.secret
    typer.echo(
        f"{account.username} is now {'an operator' if role == 'operator' else 'a user'}", err=True
    )
    if secret is not None:
        typer.echo(
            "operator key below (shown once; keep it in LICHEN_OPERATOR_KEY on the machine "
            "you administer from):",
            err=True,
        )
        typer.echo(secret)


@app.command("grant")
def grant_command(
    username: Username,
    new_key: Annotated[
        str | None,
        typer.Option(
            "--new-key",
            help="Also create an operator key with this name and print it (once).",
            show_default=False,
        ),
    ] = None,
    data_dir: TrackerDataDir = None,
) -> None:
    """Make an account an operator: its API keys with the 'account' scope then work on
    the admin API (/v1/admin) from any machine."""
    asyncio.run(_set_role(operator_settings(data_dir), username, "operator", new_key))


@app.command("revoke")
def revoke_command(username: Username, data_dir: TrackerDataDir = None) -> None:
    """Make an operator a plain user again; its keys stop working on the admin API at once."""
    asyncio.run(_set_role(operator_settings(data_dir), username, "user", None))


@app.command("list")
def list_command(data_dir: TrackerDataDir = None) -> None:
    """List the operator accounts."""

    async def load() -> list[tuple[str, str]]:
        async with _database(operator_settings(data_dir)) as engine:
            return await AccountRoles(engine).operators()

    operators = asyncio.run(load())
    if not operators:
        typer.echo(
            "No operator accounts. Make one with `lichen operator grant USERNAME`.", err=True
        )
    for account_id, username in operators:
        typer.echo(f"{username}\t{account_id}")
