"""Invites naming several trackers: signed like the rest, bounded, and old tokens still work."""

from __future__ import annotations

import base64

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.errors import ErrorCode, LichenError
from lichen.identity.invites import (
    INVITE_DOMAIN,
    MAX_TOKEN_CHARS,
    MAX_TRACKER_URLS,
    Invite,
    check_invite,
    create_invite,
    parse_invite,
)
from lichen.identity.signing import generate_key, public_raw, sign

NOW = 1_800_000_000_000
FIRST = "wss://t1.example.org/v1/node/connect"
OTHERS = ["wss://t2.example.org/v1/node/connect", "https://t3.example.org"]


class OldInvite(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The invite's layout before it could name more than one tracker."""

    invite_id: str
    network_key: bytes
    tracker_url: str
    roles: list[str]
    max_uses: int
    expires_ms: int
    issued_ms: int
    signature: bytes


def _token(payload: bytes) -> str:
    return "lichen1." + base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def _payload(token: str) -> bytes:
    body = token.removeprefix("lichen1.")
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _signed(network: Ed25519PrivateKey, invite: Invite) -> str:
    """A token for ``invite`` signed by ``network``, with none of create_invite's checks."""
    unsigned = msgspec.structs.replace(invite, signature=b"")
    signature = sign(network, INVITE_DOMAIN + msgspec.msgpack.encode(unsigned))
    return _token(msgspec.msgpack.encode(msgspec.structs.replace(invite, signature=signature)))


def _invite(network: Ed25519PrivateKey, others: list[str]) -> Invite:
    return Invite(
        invite_id="ab" * 16,
        network_key=public_raw(network),
        tracker_url=FIRST,
        roles=["node"],
        max_uses=1,
        expires_ms=0,
        issued_ms=NOW,
        signature=b"",
        other_tracker_urls=others,
    )


def _refused(token: str) -> str:
    with pytest.raises(LichenError) as excinfo:
        parse_invite(token)
    assert excinfo.value.code is ErrorCode.INVITE_INVALID
    return excinfo.value.message


def test_an_invite_names_several_trackers_in_order() -> None:
    network = generate_key()
    token = create_invite(
        network,
        tracker_url=FIRST,
        other_tracker_urls=OTHERS,
        roles=["node"],
        max_uses=2,
        now_ms=NOW,
    )
    invite = parse_invite(token)
    assert invite.tracker_url == FIRST
    assert invite.other_tracker_urls == OTHERS
    assert invite.tracker_urls() == [FIRST, *OTHERS]
    check_invite(invite, expected_network_key=public_raw(network), now_ms=NOW)


def test_a_token_made_by_the_old_layout_still_parses_and_verifies() -> None:
    network = generate_key()
    old = OldInvite(
        invite_id="cd" * 16,
        network_key=public_raw(network),
        tracker_url=FIRST,
        roles=["node"],
        max_uses=3,
        expires_ms=NOW + 60_000,
        issued_ms=NOW,
        signature=b"",
    )
    signature = sign(network, INVITE_DOMAIN + msgspec.msgpack.encode(old))
    token = _token(msgspec.msgpack.encode(msgspec.structs.replace(old, signature=signature)))
    invite = parse_invite(token)
    assert invite.tracker_urls() == [FIRST] and invite.other_tracker_urls == []
    assert (invite.invite_id, invite.max_uses, invite.expires_ms) == ("cd" * 16, 3, NOW + 60_000)
    check_invite(invite, expected_network_key=public_raw(network), now_ms=NOW)


def test_a_one_tracker_invite_is_encoded_as_before() -> None:
    """Old nodes decode a new one-tracker token: the new field is left out of it."""
    token = create_invite(generate_key(), tracker_url=FIRST, roles=["node"], now_ms=NOW)
    assert b"other_tracker_urls" not in _payload(token)
    old = msgspec.msgpack.decode(_payload(token), type=OldInvite)
    assert old.tracker_url == FIRST


def test_the_most_trackers_an_invite_may_name() -> None:
    others = [f"wss://t{i}.example.org" for i in range(MAX_TRACKER_URLS - 1)]
    invite = parse_invite(
        create_invite(
            generate_key(), tracker_url=FIRST, other_tracker_urls=others, roles=["n"], now_ms=NOW
        )
    )
    assert len(invite.tracker_urls()) == MAX_TRACKER_URLS


@pytest.mark.parametrize(
    ("others", "problem"),
    [
        ([f"wss://t{i}.example.org" for i in range(MAX_TRACKER_URLS)], "at most"),
        (["file:///etc/passwd"], "scheme"),
        (["wss://"], "no host"),
        (["not a url"], "scheme"),
        ([FIRST], "twice"),
        ([OTHERS[0], OTHERS[0]], "twice"),
        ([""], "scheme"),
    ],
)
def test_unusable_tracker_lists_are_not_created(others: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        create_invite(
            generate_key(), tracker_url=FIRST, other_tracker_urls=others, roles=["n"], now_ms=NOW
        )


def test_tracker_urls_too_long_for_a_token_are_not_created() -> None:
    others = [f"wss://t{i}.example.org/" + "p" * 300 for i in range(MAX_TRACKER_URLS - 1)]
    with pytest.raises(ValueError, match="longer than"):
        create_invite(
            generate_key(), tracker_url=FIRST, other_tracker_urls=others, roles=["n"], now_ms=NOW
        )


@pytest.mark.parametrize(
    ("others", "problem"),
    [
        ([f"wss://t{i}.example.org" for i in range(MAX_TRACKER_URLS)], "at most"),
        (["javascript:alert(1)"], "scheme"),
        ([OTHERS[0], OTHERS[0]], "twice"),
        ([FIRST], "twice"),
    ],
)
def test_signed_but_unusable_tracker_lists_are_refused(others: list[str], problem: str) -> None:
    network = generate_key()
    message = _refused(_signed(network, _invite(network, others)))
    assert problem in message


def test_an_altered_tracker_list_is_refused() -> None:
    network = generate_key()
    payload = _payload(_signed(network, _invite(network, OTHERS)))
    index = payload.index(b"t2.example.org")
    tampered = payload[:index] + b"e" + payload[index + 1 :]  # t2 -> e2: the attacker's host
    assert "signature" in _refused(_token(tampered))


def test_dropping_the_other_trackers_from_a_token_is_refused() -> None:
    network = generate_key()
    invite = parse_invite(_signed(network, _invite(network, OTHERS)))
    stripped = msgspec.structs.replace(invite, other_tracker_urls=[])  # keeps the signature
    assert "signature" in _refused(_token(msgspec.msgpack.encode(stripped)))


def test_an_explicit_empty_tracker_list_is_not_canonical() -> None:
    network = generate_key()
    fields = msgspec.structs.asdict(_invite(network, []))
    fields["other_tracker_urls"] = []  # omitted by the canonical encoding
    raw = msgspec.msgpack.encode({**fields, "signature": b"x" * 64})
    assert "canonical" in _refused(_token(raw))


@pytest.mark.parametrize("others", [[1, 2], "wss://t2.example.org", [["wss://a"]], {"a": 1}])
def test_a_malformed_tracker_list_is_refused(others: object) -> None:
    network = generate_key()
    fields = msgspec.structs.asdict(_invite(network, []))
    raw = msgspec.msgpack.encode({**fields, "signature": b"x" * 64, "other_tracker_urls": others})
    assert "malformed" in _refused(_token(raw))


def test_a_token_at_the_size_limit_is_refused_before_decoding() -> None:
    _refused("lichen1." + "A" * MAX_TOKEN_CHARS)
