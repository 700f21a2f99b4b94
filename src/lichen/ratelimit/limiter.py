"""Rate limits and quotas: requests per minute and tokens per day, per subject.

A subject is an API key (``key:<id>``), a signed-in account (``acct:<id>``) or,
for anonymous use, a client address (``ip:<addr>``). A request is admitted when
the subject has tokens left today and a request left this minute; the tokens an
answer used are counted after it is done (they are not known before).

Refusals raise ``RATE_LIMITED`` (429) with ``Retry-After``; every answer carries
``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``
(seconds until the window resets) for requests, and the same with a
``-Tokens`` suffix for the daily token quota.

When the counter store fails (Redis unreachable, timing out or erroring) the
limiter fails open by default: requests are served unlimited, and the outage is
logged once per period (:mod:`.outage`). With ``fail_closed`` (the
``limits_fail_closed`` setting) every check that cannot be made refuses with
``SERVICE_UNAVAILABLE`` (503 ``service_unavailable``, ``Retry-After``) instead.
Tokens counted after an answer was served are never refused (nothing is left to
refuse).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from redis.exceptions import RedisError

from lichen.clock import Clock, system_clock
from lichen.errors import ErrorCode, LichenError
from lichen.ratelimit.base import Backend, Count, Window
from lichen.ratelimit.outage import RETRY_S, Outage
from lichen.ratelimit.redis_store import RedisBackend

T = TypeVar("T")

MINUTE_S = 60
DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int  # 0 = unlimited
    tokens_per_day: int  # 0 = unlimited

    @property
    def requests(self) -> Window:
        return Window(self.requests_per_minute, MINUTE_S)

    @property
    def tokens(self) -> Window:
        return Window(self.tokens_per_day, DAY_S)


@dataclass(frozen=True, slots=True)
class Quota:
    """Where a subject stands after admission; becomes response headers."""

    requests: Count | None = None
    tokens: Count | None = None

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for suffix, count in (("", self.requests), ("-Tokens", self.tokens)):
            if count is not None:
                out[f"X-RateLimit-Limit{suffix}"] = str(count.limit)
                out[f"X-RateLimit-Remaining{suffix}"] = str(count.remaining)
                out[f"X-RateLimit-Reset{suffix}"] = str(math.ceil(count.reset_s))
        return out


class RateLimiter:
    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock = system_clock,
        fail_closed: bool = False,
        retry_s: float = RETRY_S,
    ) -> None:
        self.backend = backend
        self._clock = clock
        self.outage = Outage(fail_closed=fail_closed, retry_s=retry_s)

    @property
    def fail_closed(self) -> bool:
        return self.outage.fail_closed

    async def admit(self, subject: str, limits: Limits) -> Quota:
        """Count one request for ``subject``, or raise 429 if a limit is reached."""
        now = self._clock()
        tokens: Count | None = None
        if limits.tokens_per_day > 0:
            tokens = await self._take(f"tok:{subject}", limits.tokens, 0, now, force=False)
            if tokens is not None and tokens.used >= tokens.limit:
                raise _limited(
                    "daily token quota used up", Quota(tokens=tokens), tokens.retry_after_s
                )
        requests: Count | None = None
        if limits.requests_per_minute > 0:
            requests = await self._take(f"req:{subject}", limits.requests, 1, now, force=False)
            if requests is not None and not requests.allowed:
                raise _limited(
                    "too many requests; slow down",
                    Quota(requests=requests, tokens=tokens),
                    requests.retry_after_s,
                )
        return Quota(requests=requests, tokens=tokens)

    async def charge(self, subject: str, limits: Limits, extra: int, why: str) -> None:
        """Count ``extra`` more requests for an admitted request that costs more than one
        (``why`` says what makes it costly); 429 if they do not fit this minute's limit.
        A request is never weighed above the limit, so it fits an unused minute."""
        extra = min(extra, limits.requests_per_minute - 1)
        if extra <= 0:
            return
        now = self._clock()
        count = await self._take(f"req:{subject}", limits.requests, extra, now, force=False)
        if count is not None and not count.allowed:
            raise _limited(
                f"this request counts as {extra + 1} requests ({why}); slow down",
                Quota(requests=count),
                count.retry_after_s,
            )

    async def count_tokens(self, subject: str, limits: Limits, tokens: int) -> None:
        """Add the tokens an answer used to today's quota."""
        if limits.tokens_per_day > 0 and tokens > 0:
            now = self._clock()
            await self._take(f"tok:{subject}", limits.tokens, tokens, now, force=True, refuse=False)

    async def take(self, subject: str, window: Window, cost: int = 1) -> Count | None:
        """Count ``cost`` events of ``subject`` against ``window`` (``cost=0``: read only).

        The answer says whether they fit (``allowed``); None when the window is
        unlimited or the store is down and the limiter fails open. Callers that
        refuse with their own message use this; :meth:`hit` refuses with a generic one.
        """
        if window.limit <= 0:
            return None
        return await self._take(f"evt:{subject}", window, cost, self._clock(), force=False)

    async def hit(self, subject: str, window: Window) -> Count | None:
        """One event against a plain window (e.g. sign-in attempts per address); 429 if over."""
        count = await self.take(subject, window)
        if count is not None and not count.allowed:
            raise _limited(
                "too many attempts; wait a moment", Quota(requests=count), count.retry_after_s
            )
        return count

    async def hold(self, subject: str, lease: str, limit: int, ttl_s: float) -> Count | None:
        """Hold ``lease``, one of at most ``limit`` concurrent ones of ``subject`` (requests
        in flight), until :meth:`drop` or ``ttl_s``. The answer says whether it fit; None
        when ``limit`` is 0 or the store is down and the limiter fails open."""
        if limit <= 0:
            return None
        now = self._clock()
        key = f"inf:{subject}"
        return await self._call(now, True, lambda: self.backend.hold(key, lease, limit, now, ttl_s))

    async def drop(self, subject: str, lease: str) -> None:
        """Give a lease back; if the store is down it expires by itself."""
        key = f"inf:{subject}"
        await self._call(self._clock(), False, lambda: self.backend.drop(key, lease))

    @property
    def shared(self) -> bool:
        """Whether the counters live outside this process (Redis), shared by replicas."""
        return isinstance(self.backend, RedisBackend)

    async def _take(
        self, key: str, window: Window, cost: int, now: float, *, force: bool, refuse: bool = True
    ) -> Count | None:
        return await self._call(
            now, refuse, lambda: self.backend.take(key, window, cost, now, force=force)
        )

    async def _call(self, now: float, refuse: bool, call: Callable[[], Awaitable[T]]) -> T | None:
        """Make a store call; None when the store is down and the answer is to admit."""
        if self.outage.waiting(now):
            self._unavailable(refuse)
            return None
        try:
            result = await call()
        except (OSError, TimeoutError, RedisError) as exc:
            self.outage.failed(exc, now)
            self._unavailable(refuse)
            return None
        self.outage.recovered(now)
        return result

    def _unavailable(self, refuse: bool) -> None:
        """No count could be made: admit (fail open) or refuse (fail closed)."""
        if refuse and self.outage.fail_closed:
            raise LichenError(
                ErrorCode.SERVICE_UNAVAILABLE,
                "rate limits cannot be checked right now, so requests are refused; "
                "try again shortly",
                headers={"Retry-After": str(max(1, math.ceil(self.outage.retry_s)))},
            )

    async def aclose(self) -> None:
        await self.backend.aclose()


def _limited(message: str, quota: Quota, retry_after_s: int) -> LichenError:
    headers = quota.headers() | {"Retry-After": str(retry_after_s)}
    return LichenError(ErrorCode.RATE_LIMITED, message, headers=headers)
