"""Requests in flight per principal: one client cannot hold every slot of the network.

Rate limits count requests per minute; they do not stop one client from opening
64 streams at once and never reading them, which held every node slot while
another user's short request waited out its deadline. :class:`ConcurrencyLimiter`
counts each principal's requests in flight (an API key, a signed-in account, or
the client address of an anonymous caller) and refuses one more past its cap
with 429 ``rate_limit_exceeded`` and ``Retry-After``. The request guard takes a
slot when it admits a request (:meth:`~ConcurrencyLimiter.enter`) and gives it
back when the response has ended, however it ended (finished, failed, timed out,
or abandoned by the client).

Each process counts its own requests in flight (the cap always holds per
process, whatever happens to Redis). With a shared limiter (``redis_url``), each
request also holds a lease in Redis, so the cap holds across every gateway
replica: a lease expires ``lease_s`` after it was taken (the request deadline
plus a margin), so a gateway that died holding some blocks nobody for long.
While Redis is unreachable the shared part fails open or closed like every
other limit (``limits_fail_closed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator

from lichen.errors import ErrorCode, LichenError
from lichen.ratelimit import RateLimiter

RETRY_AFTER_S = 1  # a slot frees as soon as one of the caller's answers ends
LEASE_S = 360.0  # default lease: the default request deadline (300 s) plus a margin


def _too_many(limit: int) -> LichenError:
    return LichenError(
        ErrorCode.RATE_LIMITED,
        f"too many requests in flight: at most {limit} at once; wait for one to end",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class ConcurrencyLimiter:
    """Counts requests in flight per subject; refuses past a subject's cap."""

    def __init__(self, shared: RateLimiter | None = None, *, lease_s: float = LEASE_S) -> None:
        self.shared = shared  # leases across replicas (None: this process only)
        self.lease_s = lease_s
        self._inflight: dict[str, int] = {}
        self._dropping: set[asyncio.Task[None]] = set()

    def in_flight(self, subject: str | None = None) -> int:
        """Requests in flight in this process for ``subject``, or for everyone."""
        if subject is None:
            return sum(self._inflight.values())
        return self._inflight.get(subject, 0)

    def acquire(self, subject: str, limit: int) -> None:
        """Take a slot in this process for ``subject`` (``limit`` 0 = no cap), or raise 429."""
        current = self._inflight.get(subject, 0)
        if limit > 0 and current >= limit:
            raise _too_many(limit)
        self._inflight[subject] = current + 1

    def release(self, subject: str) -> None:
        current = self._inflight.get(subject, 0)
        if current <= 1:
            self._inflight.pop(subject, None)
        else:
            self._inflight[subject] = current - 1

    @contextlib.contextmanager
    def slot(self, subject: str, limit: int) -> Iterator[None]:
        """Hold a slot in this process for the ``with`` block."""
        self.acquire(subject, limit)
        try:
            yield
        finally:
            self.release(subject)

    async def enter(self, subject: str, limit: int) -> str | None:
        """Take a slot here and, with a shared limiter, a lease on every replica's count;
        429 past ``limit`` on either. Returns the lease to pass to :meth:`leave`."""
        self.acquire(subject, limit)  # this process first: no await between check and count
        if self.shared is None or limit <= 0:
            return None
        lease = secrets.token_hex(12)
        try:
            count = await self.shared.hold(subject, lease, limit, self.lease_s)
        except BaseException:
            self.release(subject)
            raise
        if count is None:  # the store is down and the limiter fails open
            return None
        if not count.allowed:
            self.release(subject)
            raise _too_many(limit)
        return lease

    async def leave(self, subject: str, lease: str | None) -> None:
        """Give back what :meth:`enter` took. The shared lease is dropped even if the
        caller is being cancelled (a client that went away), without waiting for it."""
        self.release(subject)
        if lease is None or self.shared is None:
            return
        task = asyncio.create_task(self.shared.drop(subject, lease), name="lease-drop")
        self._dropping.add(task)
        task.add_done_callback(self._dropping.discard)
        await asyncio.shield(task)  # a cancelled caller stops waiting; the drop goes on
