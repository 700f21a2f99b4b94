"""The data dir and the database are owner-only, whatever the umask (issue 10)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from lichen.identity._files import ensure_private_dir, ensure_private_file
from lichen.identity.store import load_identity
from lichen.storage.engine import create_engine, migrate


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_022")
def test_identity_creates_data_dir_0700(tmp_path: Path) -> None:
    data_dir = tmp_path / "deep" / "data"
    load_identity(data_dir)
    assert _mode(data_dir) == 0o700
    assert _mode(tmp_path / "deep") == 0o700  # a missing parent is private too
    assert _mode(data_dir / "keys") == 0o700


@pytest.mark.usefixtures("umask_022")
async def test_sqlite_database_and_wal_files_are_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url = f"sqlite+aiosqlite:///{data_dir / 'lichen.db'}"
    await migrate(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:  # a write keeps -wal and -shm in place
            await conn.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
            files = sorted(p.name for p in data_dir.iterdir())
            assert {"lichen.db", "lichen.db-wal", "lichen.db-shm"} <= set(files)
            for name in files:
                assert _mode(data_dir / name) == 0o600, name
    finally:
        await engine.dispose()
    assert _mode(data_dir) == 0o700


@pytest.mark.usefixtures("umask_022")
def test_existing_loose_database_files_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "lichen.db"
    path.write_bytes(b"")
    wal = tmp_path / "lichen.db-wal"
    wal.write_bytes(b"")
    os.chmod(path, 0o644)
    os.chmod(wal, 0o644)
    create_engine(f"sqlite+aiosqlite:///{path}")
    assert _mode(path) == 0o600
    assert _mode(wal) == 0o600


@pytest.mark.usefixtures("umask_022")
def test_existing_data_dir_is_tightened_on_request(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    ensure_private_dir(loose, fix_existing=False)
    assert _mode(loose) == 0o755  # a directory we may not own is left alone
    ensure_private_dir(loose, fix_existing=True)
    assert _mode(loose) == 0o700


@pytest.mark.usefixtures("umask_022")
def test_private_file_is_created_0600_and_content_kept(tmp_path: Path) -> None:
    path = tmp_path / "f"
    ensure_private_file(path)
    assert _mode(path) == 0o600
    path.write_bytes(b"kept")
    ensure_private_file(path)
    assert path.read_bytes() == b"kept"
