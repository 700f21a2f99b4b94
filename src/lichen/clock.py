"""Wall-clock time, injectable: services take a :data:`Clock` so tests can move time.

A clock returns seconds since the Unix epoch as a float, like :func:`time.time`.
Everything that expires (sessions, keys, deletion grace periods, rate-limit
windows, ledger timestamps) reads time through one, never ``time.time()`` directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]

system_clock: Clock = time.time


def to_ms(seconds: float) -> int:
    """Unix seconds -> Unix milliseconds (the unit stored in the database)."""
    return int(seconds * 1000)


def now_ms(clock: Clock = system_clock) -> int:
    """``clock``'s time in Unix milliseconds (identity, wire and database timestamps)."""
    return to_ms(clock())


class ManualClock:
    """A clock that only moves when told to (tests, simulations)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
