"""Rate limits and quotas: requests per minute and tokens per day, per subject.

A subject is an API key (``key:<id>``), a signed-in account (``acct:<id>``) or,
for anonymous use, a client address (``ip:<addr>``). A request is admitted when
the subject has tokens left today and a request left this minute; the tokens an
answer used are counted after it is done (they are not known before).

Refusals raise ``RATE_LIMITED`` (429) with ``Retry-After``; every answer carries
``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``
(seconds until the window resets) for requests, and the same with a
``-Tokens`` suffix for the daily token quota.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from redis.exceptions import RedisError

from lichen.clock import Clock, system_clock
from lichen.errors import ErrorCode, LichenError
from lichen.ratelimit.base import Backend, Count, Window

log = logging.getLogger(__name__)

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
    def __init__(self, backend: Backend, *, clock: Clock = system_clock) -> None:
        self.backend = backend
        self._clock = clock

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
            await self._take(f"tok:{subject}", limits.tokens, tokens, self._clock(), force=True)

    async def hit(self, subject: str, window: Window) -> Count | None:
        """One event against a plain window (e.g. sign-in attempts per address); 429 if over."""
        if window.limit <= 0:
            return None
        count = await self._take(f"evt:{subject}", window, 1, self._clock(), force=False)
        if count is not None and not count.allowed:
            raise _limited(
                "too many attempts; wait a moment", Quota(requests=count), count.retry_after_s
            )
        return count

    async def _take(
        self, key: str, window: Window, cost: int, now: float, *, force: bool
    ) -> Count | None:
        try:
            return await self.backend.take(key, window, cost, now, force=force)
        except (OSError, TimeoutError, RedisError) as exc:
            # Fail open: a rate-limit store outage must not take the API down with it.
            log.warning("rate-limit store unavailable (%s); not limiting", type(exc).__name__)
            return None

    async def aclose(self) -> None:
        await self.backend.aclose()


def _limited(message: str, quota: Quota, retry_after_s: int) -> LichenError:
    headers = quota.headers() | {"Retry-After": str(retry_after_s)}
    return LichenError(ErrorCode.RATE_LIMITED, message, headers=headers)
