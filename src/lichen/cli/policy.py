"""``lichen policy``: create, show and check the network policy file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from lichen.config import load_settings
from lichen.errors import LichenError
from lichen.privacy.policy import (
    POLICY_FILE,
    load_policy_document,
    parse_policy,
    preset_names,
    preset_text,
)
from lichen.privacy.summary import policy_text

app = typer.Typer(help="The network policy: one TOML file every component enforces.")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data directory (default: LICHEN_DATA_DIR or ~/.local/share/lichen)."
    ),
]

_err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    _err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(code)


@app.command("init")
def init_command(
    preset: Annotated[
        str, typer.Option(help=f"Preset to start from: {', '.join(preset_names())}.")
    ] = "private",
    data_dir: DataDir = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing policy file.")] = False,
) -> None:
    """Write <data dir>/policy.toml from a preset (the tracker loads it on start)."""
    settings = load_settings(data_dir=data_dir)
    try:
        text = preset_text(preset)
    except LichenError as error:
        raise _fail(error.message) from None
    path = settings.data_dir / POLICY_FILE
    if path.exists() and not force:
        raise _fail(f"{path} exists; use --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {path} (preset {preset}); restart the tracker to apply it")


@app.command("show")
def show_command(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="The parsed policy as JSON.")] = False,
    as_toml: Annotated[bool, typer.Option("--toml", help="The policy file as written.")] = False,
) -> None:
    """The policy in force, in plain language (default preset 'private' if none is set)."""
    settings = load_settings(data_dir=data_dir)
    try:
        policy, document = load_policy_document(settings.data_dir)
    except LichenError as error:
        raise _fail(error.message) from None
    if as_json:
        typer.echo(json.dumps(policy.model_dump(mode="json"), indent=2))
    elif as_toml:
        typer.echo(document.decode("utf-8"), nl=False)
    else:
        typer.echo(policy_text(policy))


@app.command("validate")
def validate_command(
    file: Annotated[Path, typer.Argument(help="Policy file to check.", exists=False)],
) -> None:
    """Check a policy file; exit 1 with every problem named if it is invalid."""
    try:
        policy = parse_policy(file.read_bytes(), source=str(file))
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror}") from None
    except LichenError as error:
        raise _fail(error.message) from None
    typer.echo(f"{file}: valid policy {policy.name!r}")


@app.command("presets")
def presets_command() -> None:
    """List the built-in presets."""
    for name in preset_names():
        policy = parse_policy(preset_text(name))
        typer.echo(f"{name:10} {policy.description}")
