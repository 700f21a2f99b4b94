"""Storage against a real SQLite file: migrations, pragmas, the request log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.config import load_settings
from lichen.storage import (
    TABLE_DATA_CLASS,
    RequestLogRepository,
    RequestRecord,
    create_engine,
    migrate,
)
from lichen.storage.engine import alembic_config
from lichen.storage.tables import Base

# The whole column set. A new column must be added here on purpose, after checking
# that it cannot hold prompt or completion text.
REQUEST_LOG_COLUMNS = {
    "id",
    "created_ms",
    "model",
    "kind",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "ttft_ms",
    "latency_ms",
    "node_peer_id",
    "stream",
    "data_class",
}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'lichen.db'}"


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    await migrate(db_url)
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


def _record(created_ms: int, **changes: object) -> RequestRecord:
    fields: dict[str, object] = {
        "created_ms": created_ms,
        "model": "smollm2-135m",
        "kind": "chat",
        "status": 200,
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "ttft_ms": 150,
        "latency_ms": 900,
        "node_peer_id": "peer-abc",
        "stream": True,
    }
    fields.update(changes)
    return RequestRecord(**fields)  # type: ignore[arg-type]


def _head_revisions() -> set[str]:
    """Every branch head: features add their tables on their own Alembic branches."""
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    assert heads
    return heads


async def _applied_revisions(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        rows = await connection.exec_driver_sql("SELECT version_num FROM alembic_version")
        return {str(row[0]) for row in rows}


async def _scalar_sql(engine: AsyncEngine, sql: str) -> object:
    async with engine.connect() as connection:
        return (await connection.exec_driver_sql(sql)).scalar_one()


async def test_migrate_twice_is_idempotent(db_url: str) -> None:
    await migrate(db_url)
    await migrate(db_url)
    engine = create_engine(db_url)
    try:
        assert await _applied_revisions(engine) == _head_revisions()
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert tables == {"alembic_version", *TABLE_DATA_CLASS}
    finally:
        await engine.dispose()


async def test_concurrent_migrations_do_not_race(db_url: str) -> None:
    await asyncio.gather(*(migrate(db_url) for _ in range(4)))
    engine = create_engine(db_url)
    try:
        assert await _scalar_sql(engine, "PRAGMA journal_mode") == "wal"
        assert await _applied_revisions(engine) == _head_revisions()
    finally:
        await engine.dispose()


async def test_default_database_lives_in_the_data_dir(lichen_data_dir: Path) -> None:
    url = load_settings().database
    await migrate(url)
    assert (lichen_data_dir / "lichen.db").is_file()


async def test_url_without_driver_gets_the_async_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    await migrate(url)
    engine = create_engine(url)
    try:
        assert engine.dialect.driver == "aiosqlite"
        assert await RequestLogRepository(engine).count() == 0
    finally:
        await engine.dispose()


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(engine: AsyncEngine) -> None:
    assert await _scalar_sql(engine, "PRAGMA journal_mode") == "wal"
    assert await _scalar_sql(engine, "PRAGMA foreign_keys") == 1
    assert int(str(await _scalar_sql(engine, "PRAGMA busy_timeout"))) > 0


async def test_migrations_match_the_declared_tables(engine: AsyncEngine) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection)
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        assert await connection.run_sync(diff) == []


async def test_request_log_has_no_column_for_content(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        columns = await connection.run_sync(
            lambda c: {col["name"] for col in inspect(c).get_columns("request_log")}
        )
    assert columns == REQUEST_LOG_COLUMNS


def test_every_table_declares_its_data_class() -> None:
    assert set(TABLE_DATA_CLASS) == set(Base.metadata.tables)
    assert TABLE_DATA_CLASS["request_log"] == "request_metadata"


async def test_record_recent_count_round_trip(engine: AsyncEngine) -> None:
    repo = RequestLogRepository(engine)
    assert await repo.count() == 0
    assert await repo.recent(10) == []

    first = _record(1_000, ttft_ms=None, node_peer_id=None, status=503, completion_tokens=0)
    second = _record(2_000, kind="completion", stream=False)
    third = _record(3_000)
    for entry in (first, second, third):
        await repo.record(entry)

    assert await repo.count() == 3
    assert await repo.recent(10) == [third, second, first]
    assert await repo.recent(2) == [third, second]
    assert await repo.recent(0) == []


async def test_rows_carry_their_data_class(engine: AsyncEngine) -> None:
    await RequestLogRepository(engine).record(_record(1))
    assert await _scalar_sql(engine, "SELECT data_class FROM request_log") == "request_metadata"


async def test_stats_since_counts_requests_and_tokens(engine: AsyncEngine) -> None:
    repo = RequestLogRepository(engine)
    assert await repo.stats_since(0) == {
        "requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "tokens": 0,
    }
    await repo.record(_record(1_000, prompt_tokens=5, completion_tokens=7))
    await repo.record(_record(2_000, prompt_tokens=3, completion_tokens=4))
    await repo.record(_record(3_000, prompt_tokens=1, completion_tokens=1))

    assert await repo.stats_since(2_000) == {
        "requests": 2,
        "prompt_tokens": 4,
        "completion_tokens": 5,
        "tokens": 9,
    }
    assert (await repo.stats_since(0))["requests"] == 3
    assert (await repo.stats_since(3_001))["requests"] == 0
