"""Private files on disk: owner-only directories and atomic, owner-only writes.

Secrets are written so that no reader ever sees a half-written file and no
other user can ever read them, not even for an instant: the temporary file is
created with mode 0600 (``os.open(..., 0o600)``), filled, fsynced, and only
then published under its final name in the same directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "atomic_write",
    "ensure_private_dir",
    "ensure_private_file",
    "tighten_mode",
]

logger = logging.getLogger(__name__)

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700

_POSIX = os.name == "posix"


def ensure_private_dir(path: Path, *, fix_existing: bool) -> None:
    """Create ``path`` and every missing parent with mode 0700.

    Missing parents are private too (the data dir, whose children hold the
    database and keys; the XDG base directory spec asks for 0700 as well).
    With ``fix_existing`` an existing directory that other users can reach is
    tightened to 0700 and a warning is logged; without it an existing directory
    is left alone (it may be a shared directory the caller does not own).
    """
    if not path.exists():
        missing = [path, *(p for p in path.parents if not p.exists())]
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another process made it first
                directory.mkdir(mode=PRIVATE_DIR_MODE)
                if _POSIX:
                    os.chmod(directory, PRIVATE_DIR_MODE)  # mkdir's mode passes the umask
        return
    if fix_existing:
        tighten_mode(path, PRIVATE_DIR_MODE)


def ensure_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it is missing; tighten it if it exists.

    For files another library creates (SQLite's database): created first by us,
    they never exist with the umask's mode, not even for an instant.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        tighten_mode(path, PRIVATE_FILE_MODE)
        return
    try:
        if _POSIX:
            os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


def tighten_mode(path: Path, mode: int) -> None:
    """If ``path`` grants more than ``mode``, chmod it to ``mode`` and log a warning.

    A file we cannot chmod (read-only mount, owned by someone else) is logged
    and left as it is: the caller can still read it.
    """
    if not _POSIX:
        return
    current = stat.S_IMODE(path.stat().st_mode)
    if current & ~mode == 0:
        return
    try:
        os.chmod(path, mode)
    except OSError as exc:
        logger.warning(
            "%s has mode %04o (other users may read it) and could not be fixed: %s",
            path,
            current,
            exc,
        )
        return
    logger.warning("%s had mode %04o; tightened to %04o", path, current, mode)


def atomic_write(path: Path, data: bytes, *, overwrite: bool) -> bool:
    """Write ``data`` to ``path`` atomically with mode 0600.

    With ``overwrite=False`` an existing file wins and is left untouched (two
    processes creating the same key race safely: exactly one key is
    published); returns whether this call published the file.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            if _POSIX:
                os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)  # the umask may have cut more
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        published = _publish(tmp, path, overwrite=overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if published:
        _fsync_dir(path.parent)
    return published


def _publish(tmp: Path, path: Path, *, overwrite: bool) -> bool:
    if overwrite:
        os.replace(tmp, path)
        return True
    try:
        # link() fails if the name exists, so a concurrent creator cannot be clobbered.
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:
        # Filesystems without hard links: fall back to a (racy, but still atomic) rename.
        if path.exists():
            return False
        os.replace(tmp, path)
    return True


def _fsync_dir(directory: Path) -> None:
    """Persist the directory entry of a freshly renamed file (POSIX only)."""
    if not _POSIX:
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the data is synced
        pass
    finally:
        os.close(fd)
