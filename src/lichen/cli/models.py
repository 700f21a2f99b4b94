"""``lichen models``: pull, list and remove local models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichBar
from rich.table import Column, Table

from lichen.config import load_settings
from lichen.errors import LichenError
from lichen.models import DEFAULT_MODEL, InstalledModel, ModelStore, pull

app = typer.Typer(
    help="Download, list and remove models (GGUF files, verified by SHA-256).",
    no_args_is_help=True,
)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory (default: LICHEN_DATA_DIR or ~/.local/share/lichen); models live "
        "in its models/ folder unless LICHEN_MODELS_DIR says otherwise.",
    ),
]


class RichProgress:
    """The models ``Progress`` protocol as a rich progress bar on stderr (terminals only)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._bar: RichBar | None = None
        self._task: TaskID | None = None

    def start(self, total: int | None, description: str) -> None:
        self.finish()
        # Fits 80 columns: a long file name is cut short, the bar is narrower than rich's.
        self._bar = RichBar(
            TextColumn(
                "{task.description}",
                table_column=Column(no_wrap=True, overflow="ellipsis", max_width=28),
            ),
            BarColumn(bar_width=16),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            disable=not self._console.is_terminal,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total)

    def advance(self, n: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, n)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar = None
        self._task = None


def _store(data_dir: Path | None) -> ModelStore:
    return ModelStore(load_settings(data_dir=data_dir).models_path)


def _fail(err: Console, message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _size(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


@app.command("pull")
def pull_command(
    spec: Annotated[
        str | None,
        typer.Argument(
            help="Catalog name, http(s):// or file:// URL, or path to a .gguf file "
            f"(default: the configured model, {DEFAULT_MODEL}).",
            show_default=False,
        ),
    ] = None,
    sha256: Annotated[
        str | None,
        typer.Option("--sha256", help="Expected SHA-256 (required for URLs without #sha256=)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Store the model under this name.")
    ] = None,
    link: Annotated[
        bool, typer.Option("--link", help="Register a local file in place instead of copying it.")
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Download (or copy) a model into the store and verify its SHA-256."""
    err = Console(stderr=True)
    try:
        settings = load_settings(data_dir=data_dir)
        store = ModelStore(settings.models_path)
        model = pull(
            spec or settings.model,
            store,
            sha256=sha256,
            name=name,
            link=link,
            progress=RichProgress(err),
        )
    except LichenError as exc:
        raise _fail(err, exc.message) from None
    except OSError as exc:
        raise _fail(err, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None
    except KeyboardInterrupt:
        err.print("interrupted; nothing was installed")
        raise typer.Exit(130) from None
    how = "linked" if model.linked else "installed"
    typer.echo(f"{model.name}: {how} {model.path} ({_size(model.size)}, sha256 {model.sha256})")


@app.command("list")
def list_command(
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List installed models."""
    err = Console(stderr=True)
    try:
        models = _store(data_dir).list()
    except LichenError as exc:
        raise _fail(err, exc.message) from None
    if as_json:
        typer.echo(json.dumps([_as_json(m) for m in models], indent=2))
        return
    if not models:
        err.print(f"No models installed. Run `lichen models pull` to fetch {DEFAULT_MODEL}.")
        return
    # Fits 80 columns: source and path share the last column and wrap there, never cut.
    table = Table(box=None)
    table.add_column("NAME", overflow="fold")
    table.add_column("SIZE", justify="right", no_wrap=True)
    table.add_column("SHA256", no_wrap=True)
    table.add_column("SOURCE / PATH", overflow="fold")
    for m in models:
        path = _home_short(m.path) + (" (linked)" if m.linked else "")
        table.add_row(m.name, _size(m.size), m.sha256[:12], escape(f"{m.source}\n{path}"))
    Console().print(table)


def _home_short(path: Path) -> str:
    """``~/...`` for a path under the home directory (shorter in a narrow table)."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


@app.command("rm")
def rm_command(
    name: Annotated[str, typer.Argument(help="Name of the installed model.")],
    data_dir: DataDirOption = None,
) -> None:
    """Remove an installed model (a linked model's own file is left in place)."""
    err = Console(stderr=True)
    store = _store(data_dir)
    model = store.get(name)
    try:
        removed = store.remove(name)
    except OSError as exc:
        raise _fail(err, f"could not remove {name}: {exc.strerror or exc}") from None
    if not removed:
        raise _fail(err, f"no model named {name!r} is installed (see `lichen models list`)")
    note = f" (left {model.path} in place)" if model is not None and model.linked else ""
    typer.echo(f"removed {model.name if model else name}{note}")


def _as_json(model: InstalledModel) -> dict[str, object]:
    return {
        "name": model.name,
        "path": str(model.path),
        "sha256": model.sha256,
        "size": model.size,
        "source": model.source,
        "linked": model.linked,
        "added_ms": model.added_ms,
    }


# The network catalog's operator commands (add, catalog, delete) register on this app.
from lichen.cli import models_catalog  # noqa: E402,F401
