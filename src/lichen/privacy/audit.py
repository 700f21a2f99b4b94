"""``lichen privacy audit``: what is actually stored, compared with what the policy allows.

For every data class: the tables that hold it, how many rows, how old the oldest
is; then each finding that breaks the policy (rows of a class the policy does not
store, rows older than the retention window, tables that declare no data class).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.privacy.policy import DataClass, Policy, data_class, format_duration
from lichen.privacy.retention import TIME_COLUMN
from lichen.storage.tables import TABLE_DATA_CLASS, Base

IGNORED_TABLES = frozenset({"alembic_version"})

# How late a retention sweep may be before old rows count as a violation.
DEFAULT_GRACE_S = 300


@dataclass
class ClassReport:
    data_class: str
    allowed: bool  # does the policy store this class anywhere
    retention_s: int | None
    tables: list[str] = field(default_factory=list)
    rows: int = 0
    oldest_age_s: int | None = None
    violations: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "data_class": self.data_class,
            "allowed": self.allowed,
            "retention_s": self.retention_s,
            "tables": self.tables,
            "rows": self.rows,
            "oldest_age_s": self.oldest_age_s,
            "violations": self.violations,
        }


@dataclass
class AuditReport:
    policy: str
    classes: list[ClassReport]
    violations: list[str]  # every violation, classes' included

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "ok": self.ok,
            "classes": [c.as_json() for c in self.classes],
            "violations": self.violations,
        }


@dataclass
class _TableStats:
    name: str
    rows: int
    oldest_ms: int | None


def _table_stats(connection: Connection) -> tuple[list[_TableStats], list[str]]:
    present = set(inspect(connection).get_table_names())
    stats: list[_TableStats] = []
    for name in sorted(present - IGNORED_TABLES):
        table = Base.metadata.tables.get(name)
        if table is None or name not in TABLE_DATA_CLASS:
            continue
        rows = int(connection.scalar(select(func.count()).select_from(table)) or 0)
        oldest = None
        if TIME_COLUMN in table.c and rows:
            oldest = connection.scalar(select(func.min(table.c[TIME_COLUMN])))
        stats.append(_TableStats(name, rows, int(oldest) if oldest is not None else None))
    undeclared = sorted(n for n in present - IGNORED_TABLES if n not in TABLE_DATA_CLASS)
    return stats, undeclared


def _model_files(models_dir: Path) -> int | None:
    if not models_dir.is_dir():
        return None
    return sum(1 for _ in models_dir.rglob("*.gguf"))


async def audit(
    engine: AsyncEngine,
    policy: Policy,
    *,
    models_dir: Path | None = None,
    now: float | None = None,
    grace_s: int = DEFAULT_GRACE_S,
) -> AuditReport:
    """Compare what ``engine``'s database (and ``models_dir``) hold with ``policy``."""
    now_ms = int((now if now is not None else time.time()) * 1000)
    async with engine.connect() as connection:
        stats, undeclared = await connection.run_sync(_table_stats)
    reports = {
        dc: ClassReport(dc.value, policy.stores(dc), policy.retention_s(dc)) for dc in DataClass
    }
    violations = [f"table {name!r} holds rows of no declared data class" for name in undeclared]
    for table in stats:
        try:
            report = reports[data_class(TABLE_DATA_CLASS[table.name])]
        except ValueError:
            violations.append(f"table {table.name!r} declares an unknown data class")
            continue
        report.tables.append(table.name)
        report.rows += table.rows
        if table.oldest_ms is not None:
            age = max(0, (now_ms - table.oldest_ms) // 1000)
            report.oldest_age_s = max(report.oldest_age_s or 0, age)
    if models_dir is not None:
        files = await asyncio.to_thread(_model_files, models_dir)
        if files is not None:
            model_report = reports[DataClass.MODEL_FILE]
            model_report.tables.append(str(models_dir))
            model_report.rows += files
    for report in reports.values():
        if report.rows and not report.allowed:
            report.violations.append(
                f"{report.rows} {report.data_class} records stored, but the policy "
                f"{policy.name!r} does not store {report.data_class}"
            )
        if (
            report.retention_s is not None
            and report.oldest_age_s is not None
            and report.oldest_age_s > report.retention_s + grace_s
        ):
            report.violations.append(
                f"{report.data_class} records are {format_duration(report.oldest_age_s)} old; "
                f"retention is {format_duration(report.retention_s)}"
            )
        violations.extend(report.violations)
    return AuditReport(policy=policy.name, classes=list(reports.values()), violations=violations)
