"""Requests in flight across replicas: each gateway's ConcurrencyLimiter holds leases in one
shared store (here one in-memory backend standing in for Redis; the Redis run is in
tests/integration/test_limits_replicas.py)."""

from __future__ import annotations

import pytest

from lichen.clock import ManualClock
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.concurrency import ConcurrencyLimiter
from lichen.ratelimit import MemoryBackend, RateLimiter

START = 1_700_000_020.0


def _replicas(clock: ManualClock, lease_s: float = 360.0) -> tuple[ConcurrencyLimiter, ...]:
    store = RateLimiter(MemoryBackend(), clock=clock)
    return ConcurrencyLimiter(store, lease_s=lease_s), ConcurrencyLimiter(store, lease_s=lease_s)


async def test_the_cap_holds_across_replicas_and_freed_slots_are_reusable() -> None:
    a, b = _replicas(ManualClock(START))
    first = await a.enter("key:k", 2)
    second = await b.enter("key:k", 2)
    assert first and second and first != second
    with pytest.raises(LichenError) as info:
        await a.enter("key:k", 2)
    assert info.value.code is ErrorCode.RATE_LIMITED
    assert info.value.headers["Retry-After"] == "1"
    assert a.in_flight("key:k") == 1  # the refused request holds nothing here
    assert await b.enter("key:other", 2)  # other principals are unaffected
    await b.leave("key:k", second)
    third = await a.enter("key:k", 2)  # a slot freed on b is usable on a
    await a.leave("key:k", first)
    await a.leave("key:k", third)
    assert a.in_flight() == 0


async def test_leases_of_a_dead_replica_expire() -> None:
    clock = ManualClock(START)
    a, b = _replicas(clock, lease_s=60.0)
    await a.enter("key:k", 1)  # a dies holding it: never left
    with pytest.raises(LichenError):
        await b.enter("key:k", 1)
    clock.advance(61)
    lease = await b.enter("key:k", 1)
    assert lease is not None


async def test_no_cap_and_no_shared_store_hold_nothing_shared() -> None:
    a, _ = _replicas(ManualClock(START))
    assert await a.enter("key:k", 0) is None  # 0 = no cap
    local = ConcurrencyLimiter()
    assert await local.enter("key:k", 1) is None
    with pytest.raises(LichenError):  # the per-process cap still holds
        await local.enter("key:k", 1)
    await local.leave("key:k", None)
    assert local.in_flight() == 0
