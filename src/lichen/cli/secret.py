"""``lichen secret``: store, list and remove the node's encrypted secrets (e.g. API keys).

Values are read from ``--value``, a hidden prompt on a terminal, or standard
input when piped (``printenv KEY | lichen secret set upstream``); they are never
printed. ``list`` shows names only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from lichen.config import load_settings
from lichen.errors import LichenError
from lichen.identity.secrets import SecretStore, validate_secret_name

app = typer.Typer(
    help="Encrypted secrets of this node (upstream API keys), referenced by name.",
    no_args_is_help=True,
)

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default: LICHEN_DATA_DIR)."),
]


def _store(data_dir: Path | None) -> SecretStore:
    return SecretStore.for_data_dir(load_settings(data_dir=data_dir).data_dir)


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(1)


def _read_value() -> str:
    if sys.stdin.isatty():
        value: str = typer.prompt("Value", hide_input=True, confirmation_prompt=True, err=True)
        return value
    return sys.stdin.read().rstrip("\r\n")


@app.command("set")
def set_command(
    name: Annotated[str, typer.Argument(help="Secret name, e.g. openai-key.")],
    value: Annotated[
        str | None,
        typer.Option(
            "--value",
            help="The value (visible in your shell history: prefer the prompt or stdin).",
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Store (or replace) a secret."""
    try:
        validate_secret_name(name)
        secret = value if value is not None else _read_value()
        _store(data_dir).set(name, secret)
    except LichenError as error:
        raise _fail(error.message) from None
    Console(stderr=True).print(f"stored secret [bold]{escape(name)}[/]", highlight=False)


@app.command("list")
def list_command(data_dir: DataDirOption = None) -> None:
    """List secret names (never values)."""
    try:
        names = _store(data_dir).names()
    except LichenError as error:
        raise _fail(error.message) from None
    if not names:
        typer.echo("No secrets yet. Add one with `lichen secret set NAME`.", err=True)
    for name in names:
        typer.echo(name)


@app.command("rm")
def rm_command(
    name: Annotated[str, typer.Argument(help="Secret name.")],
    data_dir: DataDirOption = None,
) -> None:
    """Remove a secret."""
    try:
        removed = _store(data_dir).remove(name)
    except LichenError as error:
        raise _fail(error.message) from None
    if not removed:
        raise _fail(f"no secret named {name!r}")
    Console(stderr=True).print(f"removed secret [bold]{escape(name)}[/]", highlight=False)
