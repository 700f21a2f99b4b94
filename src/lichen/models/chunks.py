"""Chunks: a model file cut into fixed-size pieces, each named by its SHA-256.

A :class:`ChunkList` describes one file (whole-file SHA-256 and size, then the
SHA-256 of each ``chunk_size`` piece in order); the tracker signs it with the
network key, so any holder can serve any chunk and the receiver checks each
piece before it writes it. :class:`ChunkStore` keeps chunks on disk by content
(``<root>/<aa>/<sha256>``), so identical pieces are stored once and garbage
collection is "delete what no catalog entry names".
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

from lichen.errors import ErrorCode, LichenError

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20  # 1 MiB: well under the 4 MiB wire frame, fine-grained enough to share
MAX_CHUNKS = 1 << 16  # 64 GiB at 1 MiB; anything claiming more is refused
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ChunkList(msgspec.Struct, frozen=True):
    """One file's chunks: what a receiver verifies each piece (and the whole) against."""

    name: str  # catalog name of the model
    sha256: str  # SHA-256 of the whole file (lowercase hex)
    size: int  # whole file in bytes (0 while a pull-through fetch has not learnt it)
    chunk_size: int  # bytes per chunk; the last one may be shorter
    chunks: list[str]  # SHA-256 of each chunk in order (a prefix while still arriving)
    complete: bool  # False while the tracker is still fetching the file from its source

    def count(self) -> int:
        """How many chunks the whole file has (needs the size)."""
        return -(-self.size // self.chunk_size) if self.size else len(self.chunks)

    def span(self, index: int) -> tuple[int, int]:
        """(offset, length) of chunk ``index`` in the file."""
        offset = index * self.chunk_size
        end = offset + self.chunk_size
        if self.size:
            end = min(end, self.size)
        return offset, end - offset


def is_sha256(value: str) -> bool:
    return bool(_HEX64.fullmatch(value))


def check_chunk_list(chunks: ChunkList) -> ChunkList:
    """Refuse a malformed list (bad hashes, absurd sizes): PROTOCOL_ERROR."""
    problems = []
    if not is_sha256(chunks.sha256):
        problems.append("bad whole-file sha256")
    if chunks.chunk_size <= 0 or chunks.chunk_size > 4 * CHUNK_SIZE:
        problems.append("bad chunk size")
    if chunks.size < 0 or len(chunks.chunks) > MAX_CHUNKS:
        problems.append("too many chunks")
    if not all(is_sha256(c) for c in chunks.chunks):
        problems.append("bad chunk sha256")
    if chunks.size and chunks.chunk_size > 0 and len(chunks.chunks) > chunks.count():
        problems.append("more chunks than the size allows")
    whole = chunks.chunk_size > 0 and chunks.size and len(chunks.chunks) == chunks.count()
    if chunks.complete and not whole:
        problems.append("a complete list must cover the whole file")
    if problems:
        raise LichenError(ErrorCode.PROTOCOL_ERROR, f"invalid chunk list: {', '.join(problems)}")
    return chunks


def chunk_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def iter_chunks(path: Path, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(chunk_size):
            yield block


def read_chunk(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)


class ChunkStore:
    """Chunks by SHA-256 under ``root``; writes are atomic and verified."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise LichenError(ErrorCode.INVALID_REQUEST, "not a chunk SHA-256", param="chunk")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def get(self, sha256: str) -> bytes | None:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Store ``data`` (checked against ``sha256`` if given); returns its SHA-256."""
        actual = chunk_sha(data)
        if sha256 is not None and actual != sha256:
            raise LichenError(
                ErrorCode.HASH_MISMATCH, f"chunk SHA-256 mismatch: expected {sha256}, got {actual}"
            )
        target = self.path(actual)
        if target.is_file():
            return actual
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return actual

    def all(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {p.name for p in self.root.glob("??/*") if is_sha256(p.name)}

    def gc(self, keep: Iterable[str]) -> int:
        """Delete every chunk not in ``keep``; returns how many were deleted."""
        wanted = set(keep)
        removed = 0
        for sha in self.all() - wanted:
            with contextlib.suppress(FileNotFoundError):
                self.path(sha).unlink()
                removed += 1
        if removed:
            log.info("garbage-collected %d model chunks", removed)
        return removed

    def assemble(self, chunks: ChunkList, dest: Path) -> None:
        """Write the file ``chunks`` describes to ``dest`` (verifying the whole)."""
        digest = hashlib.sha256()
        with dest.open("wb") as out:
            for sha in chunks.chunks:
                data = self.get(sha)
                if data is None or chunk_sha(data) != sha:
                    raise LichenError(ErrorCode.NOT_FOUND, f"chunk {sha[:12]} is missing")
                digest.update(data)
                out.write(data)
        if digest.hexdigest() != chunks.sha256:
            raise LichenError(ErrorCode.HASH_MISMATCH, f"assembled {chunks.name} does not match")
