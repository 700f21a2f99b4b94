"""Database engines and schema migrations.

``create_engine`` gives an async engine for a SQLAlchemy URL: SQLite (aiosqlite) for
the laptop and the default, PostgreSQL (asyncpg) for deployments. ``migrate`` brings
the schema to the newest Alembic revision; it is idempotent and safe to run from
several processes at once.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from lichen.identity._files import ensure_private_dir, ensure_private_file

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# How long SQLite waits for another writer before failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 10_000

# Any fixed 64-bit number: PostgreSQL advisory lock that serialises concurrent migrations.
_PG_MIGRATION_LOCK = 0x4C494348454E

# A URL without a driver ("postgresql://...") gets the async driver Lichen uses.
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; for SQLite the file's directory is created if missing
    (mode 0700), the file is owner-only (0600; SQLite gives ``-wal`` and ``-shm`` the
    database's mode) and every connection runs in WAL mode with foreign keys and a busy
    timeout."""
    parsed = make_url(url)
    parsed = parsed.set(drivername=_ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername))
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed, pool_pre_ping=True)
    database = parsed.database
    if database and database != ":memory:" and not parsed.query.get("uri"):
        _private_sqlite_files(Path(database).expanduser())
    engine = create_async_engine(parsed)
    event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    return engine


def _private_sqlite_files(path: Path) -> None:
    """The database file and its WAL companions readable by their owner only."""
    ensure_private_dir(path.parent, fix_existing=False)
    ensure_private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            ensure_private_file(companion)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as error:
            # SQLite answers BUSY at once, without waiting, when another connection is
            # creating this database. That connection set WAL too; the mode is stored in
            # the file, and this one switches to it when the other commits.
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration built in code; no ``alembic.ini`` is needed."""
    from alembic.config import Config  # imported here: only migrations need Alembic

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolation treats "%" specially (it appears in escaped passwords).
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def migrate(url: str) -> None:
    """Upgrade the database at ``url`` to the newest schema revision (no-op when current)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                # Take the write lock up front so concurrent migrators queue instead of racing.
                await connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif engine.dialect.name == "postgresql":
                await connection.exec_driver_sql(
                    f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"
                )
            await connection.run_sync(_upgrade, alembic_config())
            await connection.commit()
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, config: Config) -> None:
    # env.py runs the migrations on this connection instead of opening its own.
    from alembic import command

    config.attributes["connection"] = connection
    command.upgrade(config, "heads")
