"""Verification: GGUF magic, SHA-256 and size, checked while bytes stream past."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from lichen.errors import ErrorCode, LichenError
from lichen.models.progress import NullProgress, Progress

GGUF_MAGIC = b"GGUF"
CHUNK_SIZE = 1 << 20

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Digest:
    """What was measured: the SHA-256 (lowercase hex) and size in bytes."""

    sha256: str
    size: int


def normalize_sha256(value: str) -> str:
    """Lowercase 64-hex digest; accepts an optional ``sha256:`` prefix."""
    text = value.strip().lower().removeprefix("sha256:").removeprefix("sha256=")
    if not _HEX64.fullmatch(text):
        raise LichenError(
            ErrorCode.MODEL_SOURCE_INVALID,
            f"not a SHA-256 digest (expected 64 hex characters): {value!r}",
            param="sha256",
        )
    return text


class StreamVerifier:
    """Hashes a byte stream, failing fast on a wrong magic or an oversized stream.

    ``sha256`` and ``size`` are the expected values (None: not checked);
    ``description`` names the source in error messages.
    """

    def __init__(
        self, description: str, *, sha256: str | None = None, size: int | None = None
    ) -> None:
        self.description = description
        self.expected_sha256 = sha256
        self.expected_size = size
        self._hash = hashlib.sha256()
        self._size = 0
        self._head = b""

    def update(self, chunk: bytes) -> None:
        if len(self._head) < len(GGUF_MAGIC):
            self._head += chunk[: len(GGUF_MAGIC) - len(self._head)]
            if len(self._head) == len(GGUF_MAGIC):
                self._check_magic()
        self._hash.update(chunk)
        self._size += len(chunk)
        if self.expected_size is not None and self._size > self.expected_size:
            raise self._size_mismatch(f"more than {self._size}")

    def finish(self) -> Digest:
        """Check everything once the stream has ended; return the digest."""
        self._check_magic()
        if self.expected_size is not None and self._size != self.expected_size:
            raise self._size_mismatch(str(self._size))
        actual = self._hash.hexdigest()
        if self.expected_sha256 is not None and actual != self.expected_sha256:
            raise LichenError(
                ErrorCode.HASH_MISMATCH,
                f"SHA-256 mismatch for {self.description}: expected {self.expected_sha256}, "
                f"got {actual}",
            )
        return Digest(sha256=actual, size=self._size)

    def _check_magic(self) -> None:
        if self._head != GGUF_MAGIC:
            raise _not_gguf(self.description, self._head)

    def _size_mismatch(self, actual: str) -> LichenError:
        return LichenError(
            ErrorCode.HASH_MISMATCH,
            f"size mismatch for {self.description}: expected {self.expected_size} bytes, "
            f"got {actual}",
        )


def _not_gguf(description: str, head: bytes) -> LichenError:
    return LichenError(
        ErrorCode.MODEL_SOURCE_INVALID,
        f"{description} is not a GGUF file (it starts with {head!r}, expected {GGUF_MAGIC!r})",
    )


def check_gguf_magic(path: Path) -> None:
    """Raise MODEL_SOURCE_INVALID unless ``path`` starts with the GGUF magic."""
    with path.open("rb") as f:
        head = f.read(len(GGUF_MAGIC))
    if head != GGUF_MAGIC:
        raise _not_gguf(str(path), head)


def hash_file(path: Path, *, sha256: str | None = None, progress: Progress | None = None) -> Digest:
    """Check the GGUF magic and hash ``path`` (verifying ``sha256`` if given)."""
    progress = progress or NullProgress()
    verifier = StreamVerifier(str(path), sha256=sha256)
    progress.start(path.stat().st_size, f"Verifying {path.name}")
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_SIZE):
                verifier.update(chunk)
                progress.advance(len(chunk))
    finally:
        progress.finish()
    return verifier.finish()
