"""Requests in flight per principal: one client cannot hold every slot of the network.

Rate limits count requests per minute; they do not stop one client from opening
64 streams at once and never reading them, which held every node slot while
another user's short request waited out its deadline. :class:`ConcurrencyLimiter`
counts each principal's requests in flight (an API key, a signed-in account, or
the client address of an anonymous caller) and refuses one more past its cap
with 429 ``rate_limit_exceeded`` and ``Retry-After``. The request guard takes a
slot when it admits a request and gives it back when the response has ended,
however it ended (finished, failed, timed out, or abandoned by the client).

The counts live in this process: with several gateway processes, each applies
the cap on its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from lichen.errors import ErrorCode, LichenError

RETRY_AFTER_S = 1  # a slot frees as soon as one of the caller's answers ends


class ConcurrencyLimiter:
    """Counts requests in flight per subject; refuses past a subject's cap."""

    def __init__(self) -> None:
        self._inflight: dict[str, int] = {}

    def in_flight(self, subject: str | None = None) -> int:
        """Requests in flight for ``subject``, or for everyone."""
        if subject is None:
            return sum(self._inflight.values())
        return self._inflight.get(subject, 0)

    def acquire(self, subject: str, limit: int) -> None:
        """Take a slot for ``subject`` (``limit`` 0 = no cap), or raise 429."""
        current = self._inflight.get(subject, 0)
        if limit > 0 and current >= limit:
            raise LichenError(
                ErrorCode.RATE_LIMITED,
                f"too many requests in flight: at most {limit} at once; wait for one to end",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self._inflight[subject] = current + 1

    def release(self, subject: str) -> None:
        current = self._inflight.get(subject, 0)
        if current <= 1:
            self._inflight.pop(subject, None)
        else:
            self._inflight[subject] = current - 1

    @contextlib.contextmanager
    def slot(self, subject: str, limit: int) -> Iterator[None]:
        """Hold a slot for the ``with`` block (no await between check and count)."""
        self.acquire(subject, limit)
        try:
            yield
        finally:
            self.release(subject)
