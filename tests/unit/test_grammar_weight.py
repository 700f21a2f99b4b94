"""Costly requests spend more of the per-minute limit (issue 10: grammar-constrained answers)."""

from __future__ import annotations

import json

import pytest

from lichen.clock import ManualClock
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.limits import GRAMMAR_FREE_BYTES, grammar_weight
from lichen.ratelimit.limiter import Limits, RateLimiter
from lichen.ratelimit.memory import MemoryBackend
from lichen.wire.messages import ChatMessage, GenerationRequest, SamplingParams


def _request(response_format: str | None = None, tools: str | None = None) -> GenerationRequest:
    return GenerationRequest(
        kind="chat",
        model="m",
        messages=[ChatMessage(role="user", content="hi")],
        params=SamplingParams(response_format=response_format, tools=tools),
    )


def test_plain_and_small_schema_requests_weigh_nothing_extra() -> None:
    assert grammar_weight(_request()) == 0
    small = json.dumps({"type": "json_schema", "json_schema": {"schema": {"enum": [1, 2]}}})
    assert grammar_weight(_request(response_format=small)) == 0
    assert grammar_weight(_request(tools="x" * GRAMMAR_FREE_BYTES)) == 0


def test_each_started_kib_past_the_free_bytes_is_one_more_request() -> None:
    assert grammar_weight(_request(tools="x" * (GRAMMAR_FREE_BYTES + 1))) == 1
    assert grammar_weight(_request(tools="x" * (GRAMMAR_FREE_BYTES + 1024))) == 1
    assert grammar_weight(_request(tools="x" * (GRAMMAR_FREE_BYTES + 1025))) == 2
    both = _request(response_format="x" * 4096, tools="y" * 4096)  # counted together
    assert grammar_weight(both) == 4


async def test_a_charge_past_the_limit_is_429_and_counts_nothing() -> None:
    clock = ManualClock(start=600.0)  # the start of a one-minute window
    limiter = RateLimiter(MemoryBackend(), clock=clock)
    limits = Limits(requests_per_minute=10, tokens_per_day=0)
    await limiter.admit("a", limits)
    await limiter.charge("a", limits, 6, "costly")  # 7 of 10 used
    await limiter.admit("a", limits)  # 8
    with pytest.raises(LichenError) as refused:
        await limiter.charge("a", limits, 6, "its JSON schemas are large")
    assert refused.value.code is ErrorCode.RATE_LIMITED
    assert "counts as 7 requests (its JSON schemas are large)" in refused.value.message
    assert refused.value.headers["Retry-After"] == "60"
    await limiter.admit("a", limits)  # the refused charge counted nothing: 9
    await limiter.admit("a", limits)  # 10
    with pytest.raises(LichenError):
        await limiter.admit("a", limits)


async def test_a_request_is_never_weighed_above_the_limit() -> None:
    clock = ManualClock(start=600.0)
    limiter = RateLimiter(MemoryBackend(), clock=clock)
    limits = Limits(requests_per_minute=3, tokens_per_day=0)
    await limiter.admit("a", limits)
    await limiter.charge("a", limits, 50, "costly")  # capped at 2 more: it fits a fresh minute
    with pytest.raises(LichenError):
        await limiter.admit("a", limits)
    clock.advance(60)
    await limiter.admit("a", limits)
    unlimited = Limits(requests_per_minute=0, tokens_per_day=0)
    await limiter.charge("a", unlimited, 50, "costly")  # no limit, nothing to charge
