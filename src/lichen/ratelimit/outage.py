"""What a limiter does while its counter store (Redis) is unreachable or failing.

:class:`Outage` is a small circuit breaker plus a quiet log:

- after a failure the store is left alone for ``retry_s`` seconds (each request
  would otherwise wait for its own connect timeout against a dead host); the
  first call after that tries the store again;
- the outage is logged when it starts, then at most once every ``log_every_s``
  with how many checks were skipped meanwhile, and once when the store answers
  again: never once per request.

Whether a skipped check admits (fail open, the default) or refuses (fail closed)
is the limiter's decision (:class:`~lichen.ratelimit.limiter.RateLimiter`).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

RETRY_S = 2.0  # seconds between attempts to reach a failed store
LOG_EVERY_S = 60.0  # at most one "still unavailable" line per this many seconds


class Outage:
    def __init__(
        self, *, fail_closed: bool, retry_s: float = RETRY_S, log_every_s: float = LOG_EVERY_S
    ) -> None:
        self.fail_closed = fail_closed
        self.retry_s = retry_s
        self.log_every_s = log_every_s
        self.since: float | None = None  # when the current outage began (None: store is up)
        self._retry_at = 0.0
        self._logged_at = 0.0
        self._skipped = 0  # checks not made since the last log line
        self.total_skipped = 0  # checks not made in the current outage

    @property
    def verdict(self) -> str:
        return "refusing requests" if self.fail_closed else "not limiting"

    def waiting(self, now: float) -> bool:
        """True while the breaker is open: skip the store (and count the skip)."""
        if self.since is None or now >= self._retry_at:
            return False
        self._note_skip(now)
        return True

    def failed(self, error: BaseException, now: float) -> None:
        """A call to the store failed: open the breaker for ``retry_s``."""
        self._retry_at = now + self.retry_s
        if self.since is None:
            self.since = now
            self._logged_at = now
            self._skipped = self.total_skipped = 1
            log.warning(
                "rate-limit store unavailable (%s); %s until it answers (logged once per %g s)",
                type(error).__name__,
                self.verdict,
                self.log_every_s,
            )
            return
        self._note_skip(now)

    def recovered(self, now: float) -> None:
        """A call to the store succeeded: close the breaker (logs the end of an outage)."""
        if self.since is None:
            return
        log.warning(
            "rate-limit store reachable again after %.0f s; %d checks were skipped (%s)",
            now - self.since,
            self.total_skipped,
            self.verdict,
        )
        self.since = None
        self._skipped = self.total_skipped = 0

    def _note_skip(self, now: float) -> None:
        self._skipped += 1
        self.total_skipped += 1
        if now - self._logged_at >= self.log_every_s:
            assert self.since is not None
            log.warning(
                "rate-limit store still unavailable (%.0f s); %s: %d checks skipped in the "
                "last %.0f s",
                now - self.since,
                self.verdict,
                self._skipped,
                now - self._logged_at,
            )
            self._logged_at = now
            self._skipped = 0
