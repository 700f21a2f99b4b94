"""Progress reporting for long model transfers, as a small protocol.

The library calls ``start`` once per transfer, ``advance`` per chunk and
``finish`` at the end (also on failure); the CLI implements it with a rich bar.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives byte counts while a model is downloaded, extracted or hashed."""

    def start(self, total: int | None, description: str) -> None:
        """A transfer of ``total`` bytes (None when unknown) begins."""

    def advance(self, n: int) -> None:
        """``n`` more bytes were processed."""

    def finish(self) -> None:
        """The transfer ended (successfully or not)."""


class NullProgress:
    """Reports nothing; the default when no progress is wanted."""

    def start(self, total: int | None, description: str) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass
