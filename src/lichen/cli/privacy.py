"""``lichen privacy``: audit what is stored, export and delete kept data, telemetry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.cli.policy import DataDir
from lichen.config import Settings, load_settings
from lichen.errors import LichenError
from lichen.privacy.audit import DEFAULT_GRACE_S, AuditReport, audit
from lichen.privacy.content import ContentRepository, subject_of
from lichen.privacy.policy import format_duration, load_policy
from lichen.privacy.retention import RetentionSweeper
from lichen.privacy.telemetry import set_telemetry_opt_in, telemetry_opt_in
from lichen.storage.engine import create_engine, migrate

app = typer.Typer(help="Audit stored data against the policy; export and delete kept data.")

_out = Console()
_err = Console(stderr=True)


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[AsyncEngine]:
    await migrate(settings.database)
    engine = create_engine(settings.database)
    try:
        yield engine
    finally:
        await engine.dispose()


def _settings(data_dir: Path | None) -> Settings:
    return load_settings(data_dir=data_dir)


def _age(seconds: int | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def _print_report(report: AuditReport) -> None:
    table = Table(title=f"Stored data under the {report.policy!r} policy")
    for column in ("data class", "allowed", "retention", "records", "oldest", "where"):
        table.add_column(column)
    for c in report.classes:
        retention = "-" if c.retention_s is None else format_duration(c.retention_s)
        mark = "[red]VIOLATION[/red]" if c.violations else ""
        table.add_row(
            f"{c.data_class} {mark}",
            "yes" if c.allowed else "no",
            retention if c.allowed else "-",
            str(c.rows),
            _age(c.oldest_age_s),
            ", ".join(c.tables),
        )
    _out.print(table)
    for line in report.violations:
        _out.print(f"[red]violation:[/red] {escape(line)}", highlight=False)
    if report.ok:
        _out.print("[green]ok:[/green] everything stored is allowed by the policy")


@app.command("audit")
def audit_command(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    grace: Annotated[
        int, typer.Option(help="Seconds a retention sweep may lag before it is a violation.")
    ] = DEFAULT_GRACE_S,
) -> None:
    """Every stored data class with counts and oldest age, against the policy.

    Exits 1 if anything stored breaks the policy.
    """
    settings = _settings(data_dir)
    try:
        policy = load_policy(settings.data_dir)
    except LichenError as error:
        _err.print(f"[red]error:[/red] {escape(error.message)}")
        raise typer.Exit(2) from None

    async def run() -> AuditReport:
        async with _database(settings) as engine:
            return await audit(engine, policy, models_dir=settings.models_path, grace_s=grace)

    report = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command("sweep")
def sweep_command(data_dir: DataDir = None) -> None:
    """Delete every row older than its data class's retention, now."""
    settings = _settings(data_dir)
    policy = load_policy(settings.data_dir)

    async def run() -> dict[str, int]:
        async with _database(settings) as engine:
            return await RetentionSweeper(engine, policy).sweep()

    deleted = asyncio.run(run())
    typer.echo(
        ", ".join(f"{name}: {n} deleted" for name, n in deleted.items()) or "nothing expired"
    )


def _write_jsonl(lines: list[str], out: TextIO) -> None:
    for line in lines:
        out.write(line + "\n")


@app.command("export")
def export_command(
    data_dir: DataDir = None,
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only this sender's data.")] = None,
) -> None:
    """Kept prompts and answers (dataset log, feed posts) as JSON Lines."""
    settings = _settings(data_dir)

    async def run() -> list[str]:
        async with _database(settings) as engine:
            return [
                json.dumps(e.as_json(), ensure_ascii=False)
                async for e in ContentRepository(engine).export(subject)
            ]

    lines = asyncio.run(run())
    if out is None:
        _write_jsonl(lines, sys.stdout)
    else:
        with out.open("w", encoding="utf-8") as handle:
            _write_jsonl(lines, handle)
        _err.print(f"exported {len(lines)} exchanges to {out}")


@app.command("delete")
def delete_command(
    data_dir: DataDir = None,
    subject: Annotated[str | None, typer.Option(help="Pseudonymous sender id (export).")] = None,
    user: Annotated[str | None, typer.Option(help="The `user` field the sender used.")] = None,
    api_key: Annotated[str | None, typer.Option(help="The sender's API key.")] = None,
) -> None:
    """Delete everything kept for one sender (per-user deletion)."""
    target = subject or subject_of(api_key, user)
    if target is None:
        _err.print("[red]error:[/red] give --subject, --user or --api-key")
        raise typer.Exit(2)
    settings = _settings(data_dir)

    async def run() -> int:
        async with _database(settings) as engine:
            return await ContentRepository(engine).delete_subject(target)

    typer.echo(f"deleted {asyncio.run(run())} exchanges of {target}")


@app.command("telemetry")
def telemetry_command(
    state: Annotated[str | None, typer.Argument(help="on or off; omit to show.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Show or set this node's saved telemetry choice (off unless turned on)."""
    settings = _settings(data_dir)
    if state is not None:
        if state not in ("on", "off"):
            _err.print("[red]error:[/red] say on or off")
            raise typer.Exit(2)
        set_telemetry_opt_in(settings.data_dir, state == "on")
    typer.echo(f"telemetry: {'on' if telemetry_opt_in(settings.data_dir) else 'off'}")
