"""Helpers the operator's commands share: the tracker's database, errors, times."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from lichen import clock
from lichen.config import Settings, load_settings
from lichen.storage.engine import create_engine, migrate
from lichen.storage.membership import MembershipRepository

TrackerDataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="The tracker's data directory (default: LICHEN_DATA_DIR or ~/.local/share/lichen).",
    ),
]


def operator_settings(data_dir: Path | None) -> Settings:
    return load_settings(data_dir=data_dir)


@contextlib.asynccontextmanager
async def membership(settings: Settings) -> AsyncIterator[MembershipRepository]:
    """The tracker's membership tables (migrated first; safe while the tracker runs)."""
    await migrate(settings.database)
    engine = create_engine(settings.database)
    try:
        yield MembershipRepository(engine)
    finally:
        await engine.dispose()


def fail(message: str, code: int = 1) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def ago(ms: int, now_ms: int | None = None) -> str:
    """``12s ago``, ``3m ago``, ``2h ago``, ``5d ago``."""
    if not ms:
        return "-"
    now = now_ms if now_ms is not None else clock.now_ms()
    return f"{_span(max(0, now - ms) // 1000)} ago"


def until(ms: int, now_ms: int | None = None) -> str:
    """``in 23h``; ``never`` for 0; ``expired`` when past."""
    if not ms:
        return "never"
    now = now_ms if now_ms is not None else clock.now_ms()
    return "expired" if ms <= now else f"in {_span((ms - now) // 1000)}"


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_duration(text: str) -> int | None:
    """Seconds in ``30m``, ``24h``, ``7d``, ``90s`` or a bare number of seconds; None for
    ``never``/``0``. Raises ValueError for anything else."""
    value = text.strip().lower()
    if value in ("never", "0", "none"):
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    number, unit = (value[:-1], value[-1]) if value[-1:] in units else (value, "s")
    seconds = int(float(number) * units[unit])
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return seconds
