"""What a request says about itself, read once for every surface (lichen.http), and the
one CSRF check of the web UI and the JSON API."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from lichen.errors import ErrorCode, LichenError, parse_code
from lichen.http import csrf
from lichen.http.requests import bearer_token, is_loopback_address
from lichen.identity.trust import TrustLevel


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer lk-abc", "lk-abc"),
        ("bearer   lk-abc  ", "lk-abc"),
        ("  BEARER lk-abc", "lk-abc"),
        ("Bearer", None),
        ("Bearer    ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("lk-abc", None),
        ("", None),
    ],
)
def test_bearer_token(header: str, token: str | None) -> None:
    assert bearer_token({"authorization": header}) == token


def test_no_authorization_header_is_no_token() -> None:
    assert bearer_token({}) is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("::ffff:8.8.8.8", False),
        ("localhost", False),  # a name, not an address
        ("", False),
        ("not an address", False),
    ],
)
def test_is_loopback_address(host: str, loopback: bool) -> None:
    assert is_loopback_address(host) is loopback


def test_wire_codes_parse_to_error_codes_with_a_fallback() -> None:
    assert parse_code("rate_limit_exceeded", unknown=ErrorCode.INTERNAL) is ErrorCode.RATE_LIMITED
    assert parse_code("made_up", unknown=ErrorCode.PROTOCOL_ERROR) is ErrorCode.PROTOCOL_ERROR
    assert parse_code("", unknown=ErrorCode.HANDSHAKE_FAILED) is ErrorCode.HANDSHAKE_FAILED


def test_trust_levels_are_the_stored_strings() -> None:
    assert [str(level) for level in TrustLevel] == ["owner", "trusted", "community"]
    assert TrustLevel.OWNER == "owner"


def _request(cookie: str | None, header: str | None) -> Request:
    headers: list[tuple[bytes, bytes]] = []
    if cookie is not None:
        headers.append((b"cookie", f"{csrf.COOKIE}={cookie}".encode()))
    if header is not None:
        headers.append((csrf.HEADER.encode(), header.encode("utf-8")))
    return Request({"type": "http", "method": "POST", "headers": headers, "path": "/"})


def test_csrf_accepts_the_cookies_token_only() -> None:
    token = "t" * 40
    csrf.check(_request(token, token))
    csrf.check(_request(token, None), submitted=token)  # a form field
    for cookie, header in [(token, "u" * 40), (None, token), (token, None), ("", "")]:
        with pytest.raises(LichenError) as info:
            csrf.check(_request(cookie, header))
        assert info.value.code is ErrorCode.FORBIDDEN


def test_a_non_ascii_csrf_token_is_refused_not_a_crash() -> None:
    with pytest.raises(LichenError) as info:
        csrf.check(_request("t" * 40, "é" * 40))
    assert info.value.code is ErrorCode.FORBIDDEN
