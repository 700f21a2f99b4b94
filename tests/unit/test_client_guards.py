"""Per-principal concurrency caps and the Host/Origin policy, in isolation."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from lichen.config import Settings
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.concurrency import ConcurrencyLimiter
from lichen.gateway.origin import HostPolicy, _cross_site, is_loopback_name, split_host


def test_a_principal_past_its_cap_is_refused_and_others_are_not() -> None:
    limiter = ConcurrencyLimiter()
    limiter.acquire("ip:a", 2)
    limiter.acquire("ip:a", 2)
    with pytest.raises(LichenError) as caught:
        limiter.acquire("ip:a", 2)
    assert caught.value.code is ErrorCode.RATE_LIMITED
    assert caught.value.headers["Retry-After"] == "1"
    limiter.acquire("ip:b", 2)  # another principal
    assert limiter.in_flight("ip:a") == 2 and limiter.in_flight() == 3
    limiter.release("ip:a")
    limiter.acquire("ip:a", 2)  # a freed slot is usable again
    for _ in range(3):
        limiter.release("ip:a")
    limiter.release("ip:b")
    assert limiter.in_flight() == 0


def test_the_slot_is_released_however_the_block_ends() -> None:
    limiter = ConcurrencyLimiter()
    with pytest.raises(RuntimeError), limiter.slot("k", 1):
        raise RuntimeError("the response failed")
    assert limiter.in_flight() == 0
    for _ in range(5):  # 0 = no cap
        limiter.acquire("k", 0)
    assert limiter.in_flight("k") == 5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8470", ("127.0.0.1", 8470)),
        ("LocalHost", ("localhost", None)),
        ("[::1]:80", ("::1", 80)),
        ("evil.example.:8470", ("evil.example", 8470)),
        ("a:b:c", ("a:b:c", None)),
        ("", ("", None)),
    ],
)
def test_split_host(value: str, expected: tuple[str, int | None]) -> None:
    assert split_host(value) == expected


def test_loopback_names() -> None:
    for name in ("localhost", "app.localhost", "127.0.0.1", "127.9.9.9", "::1"):
        assert is_loopback_name(name)
    for name in ("evil.example", "localhost.evil.example", "10.0.0.1", ""):
        assert not is_loopback_name(name)


def test_a_loopback_gateway_answers_only_to_its_names() -> None:
    policy = HostPolicy.from_settings(Settings(host="127.0.0.1"))
    assert not policy.any_host
    assert policy.allows("localhost") and policy.allows("127.0.0.1") and policy.allows("10.1.2.3")
    assert not policy.allows("evil.example")
    named = HostPolicy.from_settings(
        Settings(host="127.0.0.1", public_url="https://lichen.example.org", allowed_hosts="a.b")
    )
    assert named.allows("lichen.example.org") and named.allows("a.b")
    assert not named.allows("evil.example")


def test_a_public_bind_answers_to_any_name_unless_told() -> None:
    assert HostPolicy.from_settings(Settings(host="0.0.0.0")).any_host
    strict = HostPolicy.from_settings(Settings(host="0.0.0.0", allowed_hosts="lichen.example.org"))
    assert not strict.any_host and not strict.allows("evil.example")
    assert HostPolicy.from_settings(Settings(host="127.0.0.1", allowed_hosts="*")).any_host


@pytest.mark.parametrize(
    ("headers", "cross"),
    [
        ({"host": "127.0.0.1:8470"}, False),
        ({"host": "127.0.0.1:8470", "origin": "http://127.0.0.1:8470"}, False),
        ({"host": "lichen.example.org", "origin": "https://lichen.example.org"}, False),
        ({"host": "127.0.0.1:8470", "sec-fetch-site": "same-origin"}, False),
        ({"host": "127.0.0.1:8470", "sec-fetch-site": "none"}, False),
        ({"host": "127.0.0.1:8470", "origin": "http://evil.example"}, True),
        ({"host": "127.0.0.1:8470", "origin": "http://127.0.0.1:9999"}, True),
        ({"host": "127.0.0.1:8470", "origin": "null"}, True),
        ({"host": "127.0.0.1:8470", "origin": "not a url"}, True),
        ({"host": "127.0.0.1:8470", "sec-fetch-site": "cross-site"}, True),
        ({"host": "127.0.0.1:8470", "sec-fetch-site": "same-site"}, True),
    ],
)
def test_cross_site_detection(headers: dict[str, str], cross: bool) -> None:
    assert (_cross_site(Headers(headers)) is not None) is cross
