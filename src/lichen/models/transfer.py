"""Byte streams from sources, and the one way bytes land in the store.

``write_verified`` writes to a temp file next to the destination, verifies size
and SHA-256, and only then ``os.replace``-s it into place, so a reader never
sees a partial or unverified model and a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx

from lichen.errors import ErrorCode, LichenError
from lichen.models.progress import Progress
from lichen.models.verify import CHUNK_SIZE, Digest, StreamVerifier

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, read=120.0)


@dataclass
class Stream:
    """An open source: its size if known, and its bytes in chunks."""

    total: int | None
    chunks: Iterator[bytes]


@contextlib.contextmanager
def open_local(path: Path) -> Iterator[Stream]:
    """Stream a local file; a missing file is MODEL_NOT_FOUND."""
    try:
        f = path.open("rb")
    except FileNotFoundError as exc:
        raise LichenError(ErrorCode.MODEL_NOT_FOUND, f"no such file: {path}") from exc
    except OSError as exc:
        raise LichenError(
            ErrorCode.MODEL_SOURCE_INVALID, f"cannot read {path}: {exc.strerror}"
        ) from exc
    with f:
        yield Stream(
            total=os.fstat(f.fileno()).st_size, chunks=iter(lambda: f.read(CHUNK_SIZE), b"")
        )


@contextlib.contextmanager
def open_url(
    url: str, *, display: str | None = None, timeout: httpx.Timeout = DEFAULT_TIMEOUT
) -> Iterator[Stream]:
    """Stream an ``http(s)://`` URL with httpx (redirects followed) or a ``file://`` URL.

    Network and HTTP errors, also those raised mid-stream, become
    MODEL_SOURCE_INVALID naming ``display`` (the URL without secrets).
    """
    shown = display or url
    parts = urlsplit(url)
    if parts.scheme == "file":
        with open_local(Path(url2pathname(parts.path))) as stream:
            yield stream
        return
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise LichenError(
                    ErrorCode.MODEL_SOURCE_INVALID,
                    f"download failed: HTTP {response.status_code} from {shown}",
                )
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() and not _encoded(response) else None
            yield Stream(total=total, chunks=response.iter_bytes(CHUNK_SIZE))
    except httpx.HTTPError as exc:
        raise LichenError(
            ErrorCode.MODEL_SOURCE_INVALID, f"download failed from {shown}: {exc}"
        ) from exc


def _encoded(response: httpx.Response) -> bool:
    encoding: str = response.headers.get("content-encoding", "identity")
    return encoding.lower() != "identity"


def write_verified(
    stream: Stream, dest: Path, verifier: StreamVerifier, progress: Progress
) -> Digest:
    """Copy ``stream`` to ``dest`` atomically, verified; on any failure remove the temp file."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in stream.chunks:
                verifier.update(chunk)
                f.write(chunk)
                progress.advance(len(chunk))
            f.flush()
            os.fsync(f.fileno())
        digest = verifier.finish()
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    logger.info("wrote %s (%d bytes, sha256 %s)", dest, digest.size, digest.sha256)
    return digest


def _fsync_dir(path: Path) -> None:
    """Make the rename durable where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
