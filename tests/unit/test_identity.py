"""Identity: signatures, certificates, invites, handshake crypto and key files."""

from __future__ import annotations

import base64
import logging
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.errors import ErrorCode, LichenError
from lichen.identity import (
    DeviceCertificate,
    Invite,
    ReplayGuard,
    check_invite,
    create_invite,
    generate_key,
    is_peer_id,
    issue_device_certificate,
    load_identity,
    load_or_create_key,
    new_nonce,
    node_auth,
    parse_invite,
    peer_id,
    public_raw,
    sign,
    tracker_proof,
    verify,
    verify_device_certificate,
    verify_node_auth,
    verify_tracker_proof,
)

NOW = 1_700_000_000_000
TRACKER_URL = "wss://tracker.example.org/ws"
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _flip_bit(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --- signing ----------------------------------------------------------------------------


def test_sign_verify_round_trip() -> None:
    key = generate_key()
    signature = sign(key, b"hello")
    assert len(signature) == 64
    assert verify(public_raw(key), signature, b"hello")


@pytest.mark.parametrize("index", [0, 2, 4])
def test_flipped_bit_in_data_fails(index: int) -> None:
    key = generate_key()
    signature = sign(key, b"hello")
    assert not verify(public_raw(key), signature, _flip_bit(b"hello", index))


@pytest.mark.parametrize("index", [0, 31, 32, 63])
def test_flipped_bit_in_signature_fails(index: int) -> None:
    key = generate_key()
    signature = sign(key, b"hello")
    assert not verify(public_raw(key), _flip_bit(signature, index), b"hello")


def test_signature_by_another_key_fails() -> None:
    signature = sign(generate_key(), b"hello")
    assert not verify(public_raw(generate_key()), signature, b"hello")


@pytest.mark.parametrize(
    ("key", "signature"),
    [(b"", b"\x00" * 64), (b"\x01" * 31, b"\x00" * 64), (b"\x01" * 33, b"\x00" * 64)],
)
def test_verify_returns_false_on_malformed_input(key: bytes, signature: bytes) -> None:
    assert verify(key, signature, b"hello") is False


def test_verify_returns_false_on_short_signature() -> None:
    key = generate_key()
    assert verify(public_raw(key), sign(key, b"x")[:63], b"x") is False


def test_peer_id_is_stable_and_readable() -> None:
    raw = public_raw(generate_key())
    pid = peer_id(raw)
    assert pid == peer_id(raw)
    assert re.fullmatch(r"lp-[a-z2-7]{32}", pid)
    assert is_peer_id(pid)
    assert peer_id(public_raw(generate_key())) != pid
    assert not is_peer_id(pid.upper())
    with pytest.raises(ValueError):
        peer_id(raw[:31])


# --- device certificates ----------------------------------------------------------------


def _reencode(cert_bytes: bytes, **changes: object) -> bytes:
    cert = msgspec.msgpack.decode(cert_bytes, type=DeviceCertificate)
    return msgspec.msgpack.encode(msgspec.structs.replace(cert, **changes))


def test_certificate_round_trip() -> None:
    account, device = generate_key(), generate_key()
    cert_bytes = issue_device_certificate(
        account, public_raw(device), name="laptop", ttl_s=None, now_ms=NOW
    )
    cert = verify_device_certificate(cert_bytes, now_ms=NOW + 10**12)
    assert cert.device_key == public_raw(device)
    assert cert.account_key == public_raw(account)
    assert cert.name == "laptop"
    assert cert.issued_ms == NOW
    assert cert.expires_ms == 0


def test_certificate_forged_by_another_account_key_fails() -> None:
    victim, attacker, device = generate_key(), generate_key(), generate_key()
    forged = _reencode(
        issue_device_certificate(attacker, public_raw(device), now_ms=NOW),
        account_key=public_raw(victim),
    )
    with pytest.raises(LichenError) as excinfo:
        verify_device_certificate(forged, now_ms=NOW)
    assert excinfo.value.code is ErrorCode.HANDSHAKE_FAILED


@pytest.mark.parametrize(
    "changes",
    [{"name": "other"}, {"expires_ms": NOW + 1000}, {"issued_ms": NOW - 1}],
)
def test_certificate_with_altered_field_fails(changes: dict[str, object]) -> None:
    cert_bytes = issue_device_certificate(generate_key(), public_raw(generate_key()), now_ms=NOW)
    with pytest.raises(LichenError) as excinfo:
        verify_device_certificate(_reencode(cert_bytes, **changes), now_ms=NOW)
    assert excinfo.value.code is ErrorCode.HANDSHAKE_FAILED


def test_certificate_for_swapped_device_key_fails() -> None:
    cert_bytes = issue_device_certificate(generate_key(), public_raw(generate_key()), now_ms=NOW)
    swapped = _reencode(cert_bytes, device_key=public_raw(generate_key()))
    with pytest.raises(LichenError) as excinfo:
        verify_device_certificate(swapped, now_ms=NOW)
    assert excinfo.value.code is ErrorCode.HANDSHAKE_FAILED


@pytest.mark.parametrize("garbage", [b"", b"\xc1", b"not msgpack at all", b"\x90"])
def test_malformed_certificate_fails(garbage: bytes) -> None:
    with pytest.raises(LichenError) as excinfo:
        verify_device_certificate(garbage, now_ms=NOW)
    assert excinfo.value.code is ErrorCode.HANDSHAKE_FAILED


def test_certificate_with_extra_field_fails() -> None:
    cert_bytes = issue_device_certificate(generate_key(), public_raw(generate_key()), now_ms=NOW)
    fields = msgspec.msgpack.decode(cert_bytes)
    fields["extra"] = 1
    with pytest.raises(LichenError) as excinfo:
        verify_device_certificate(msgspec.msgpack.encode(fields), now_ms=NOW)
    assert excinfo.value.code is ErrorCode.HANDSHAKE_FAILED


def test_expired_certificate_is_identity_expired() -> None:
    cert_bytes = issue_device_certificate(
        generate_key(), public_raw(generate_key()), ttl_s=60, now_ms=NOW
    )
    assert verify_device_certificate(cert_bytes, now_ms=NOW + 59_999).expires_ms == NOW + 60_000
    with pytest.raises(LichenError) as excinfo:
        verify_device_certificate(cert_bytes, now_ms=NOW + 60_000)
    assert excinfo.value.code is ErrorCode.IDENTITY_EXPIRED


# --- invites ----------------------------------------------------------------------------


def _invite(
    network: Ed25519PrivateKey | None = None,
    *,
    tracker_url: str = TRACKER_URL,
    roles: tuple[str, ...] = ("node",),
    max_uses: int = 0,
    ttl_s: int | None = None,
) -> str:
    return create_invite(
        network or generate_key(),
        tracker_url=tracker_url,
        roles=list(roles),
        max_uses=max_uses,
        ttl_s=ttl_s,
        now_ms=NOW,
    )


def _payload(token: str) -> bytes:
    body = token.removeprefix("lichen1.")
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _token(payload: bytes) -> str:
    return "lichen1." + base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def _assert_invalid(token: str) -> LichenError:
    with pytest.raises(LichenError) as excinfo:
        parse_invite(token)
    assert excinfo.value.code is ErrorCode.INVITE_INVALID
    return excinfo.value


def test_invite_round_trip() -> None:
    network = generate_key()
    token = _invite(network, max_uses=3, ttl_s=3600)
    assert token.startswith("lichen1.")
    assert re.fullmatch(r"lichen1\.[A-Za-z0-9_-]+", token)
    invite = parse_invite(f"  {token}\n")
    assert isinstance(invite, Invite)
    assert invite.network_key == public_raw(network)
    assert invite.tracker_url == TRACKER_URL
    assert invite.roles == ["node"]
    assert invite.max_uses == 3
    assert invite.expires_ms == NOW + 3_600_000
    assert re.fullmatch(r"[0-9a-f]{32}", invite.invite_id)
    check_invite(invite, expected_network_key=public_raw(network), now_ms=NOW)
    check_invite(invite, expected_network_key=None, now_ms=NOW)


def test_invite_ids_are_unique() -> None:
    network = generate_key()
    assert parse_invite(_invite(network)).invite_id != parse_invite(_invite(network)).invite_id


def test_tampered_invite_payload_is_refused() -> None:
    payload = _payload(_invite())
    index = payload.index(b"tracker.example.org")
    tampered = payload[:index] + b"T" + payload[index + 1 :]
    error = _assert_invalid(_token(tampered))
    assert "signature" in error.message


def test_tampered_invite_token_character_is_refused() -> None:
    token = _invite()
    middle = len(token) // 2
    replacement = "A" if token[middle] != "A" else "B"
    _assert_invalid(token[:middle] + replacement + token[middle + 1 :])


def test_invite_resigned_by_another_key_is_refused() -> None:
    victim, attacker = generate_key(), generate_key()
    invite = parse_invite(_invite(attacker))
    forged = msgspec.structs.replace(invite, network_key=public_raw(victim))
    _assert_invalid(_token(msgspec.msgpack.encode(forged)))


@pytest.mark.parametrize(
    "token",
    ["", "lichen1.", "lichen1.!!!!", "lichen2.AAAA", "hello", "lichen1." + "A" * 5000],
)
def test_garbage_invite_is_refused(token: str) -> None:
    _assert_invalid(token)


def test_invite_with_wrong_prefix_is_refused() -> None:
    token = _invite()
    _assert_invalid("lichen2." + token.removeprefix("lichen1."))


def test_invite_for_another_network_is_refused() -> None:
    invite = parse_invite(_invite())
    with pytest.raises(LichenError) as excinfo:
        check_invite(invite, expected_network_key=public_raw(generate_key()), now_ms=NOW)
    assert excinfo.value.code is ErrorCode.INVITE_INVALID
    assert "another network" in excinfo.value.message


def test_expired_invite_is_refused() -> None:
    network = generate_key()
    invite = parse_invite(_invite(network, ttl_s=60))
    check_invite(invite, expected_network_key=public_raw(network), now_ms=NOW + 59_999)
    with pytest.raises(LichenError) as excinfo:
        check_invite(invite, expected_network_key=public_raw(network), now_ms=NOW + 60_000)
    assert excinfo.value.code is ErrorCode.INVITE_INVALID
    assert excinfo.value.message == "invite expired"


def test_unusable_invites_are_not_created() -> None:
    with pytest.raises(ValueError):
        _invite(tracker_url="file:///etc/passwd")
    with pytest.raises(ValueError):
        _invite(roles=())
    with pytest.raises(ValueError):
        _invite(max_uses=-1)


# --- handshake --------------------------------------------------------------------------


def test_tracker_proof_verifies_and_mismatches_fail() -> None:
    network, node_nonce, tracker_nonce = generate_key(), new_nonce(), new_nonce()
    proof = tracker_proof(network, node_nonce, tracker_nonce)
    network_pub = public_raw(network)
    assert verify_tracker_proof(network_pub, proof, node_nonce, tracker_nonce)
    assert not verify_tracker_proof(public_raw(generate_key()), proof, node_nonce, tracker_nonce)
    assert not verify_tracker_proof(network_pub, proof, new_nonce(), tracker_nonce)
    assert not verify_tracker_proof(network_pub, proof, tracker_nonce, node_nonce)
    assert not verify_tracker_proof(network_pub, proof, node_nonce[:16], tracker_nonce)


def test_tracker_proof_is_domain_separated() -> None:
    network, node_nonce, tracker_nonce = generate_key(), new_nonce(), new_nonce()
    bare = sign(network, node_nonce + tracker_nonce)
    assert not verify_tracker_proof(public_raw(network), bare, node_nonce, tracker_nonce)


def test_nonces_are_fresh() -> None:
    assert len(new_nonce()) == 32
    assert new_nonce() != new_nonce()


def test_node_auth_verifies() -> None:
    device, nonce = generate_key(), new_nonce()
    signature = node_auth(device, nonce, NOW)
    verify_node_auth(public_raw(device), signature, nonce, NOW, now_ms=NOW + 59_000)
    verify_node_auth(public_raw(device), signature, nonce, NOW, now_ms=NOW - 59_000)


@pytest.mark.parametrize("what", ["key", "nonce", "timestamp", "signature"])
def test_node_auth_mismatch_is_handshake_failed(what: str) -> None:
    device, nonce = generate_key(), new_nonce()
    signature = node_auth(device, nonce, NOW)
    key, timestamp = public_raw(device), NOW
    if what == "key":
        key = public_raw(generate_key())
    elif what == "nonce":
        nonce = new_nonce()
    elif what == "timestamp":
        timestamp = NOW + 1
    else:
        signature = _flip_bit(signature, 5)
    with pytest.raises(LichenError) as excinfo:
        verify_node_auth(key, signature, nonce, timestamp, now_ms=NOW)
    assert excinfo.value.code is ErrorCode.HANDSHAKE_FAILED


@pytest.mark.parametrize("offset_ms", [-60_001, 60_001, -3_600_000])
def test_node_auth_outside_window_is_replayed(offset_ms: int) -> None:
    device, nonce = generate_key(), new_nonce()
    signature = node_auth(device, nonce, NOW + offset_ms)
    with pytest.raises(LichenError) as excinfo:
        verify_node_auth(public_raw(device), signature, nonce, NOW + offset_ms, now_ms=NOW)
    assert excinfo.value.code is ErrorCode.REPLAYED


def test_node_refuses_to_sign_a_non_nonce() -> None:
    with pytest.raises(LichenError) as excinfo:
        node_auth(generate_key(), b"a manifest body chosen by the tracker", NOW)
    assert excinfo.value.code is ErrorCode.HANDSHAKE_FAILED


def test_tracker_refuses_to_sign_a_malformed_node_nonce() -> None:
    with pytest.raises(LichenError) as excinfo:
        tracker_proof(generate_key(), b"short", new_nonce())
    assert excinfo.value.code is ErrorCode.HANDSHAKE_FAILED


def test_replay_guard_refuses_second_use_until_window_passes() -> None:
    guard = ReplayGuard(window_ms=1000)
    guard.check_and_remember(b"sig-1", NOW)
    guard.check_and_remember(b"sig-2", NOW)
    with pytest.raises(LichenError) as excinfo:
        guard.check_and_remember(b"sig-1", NOW + 999)
    assert excinfo.value.code is ErrorCode.REPLAYED
    guard.check_and_remember(b"sig-1", NOW + 1000)
    assert len(guard) == 1  # sig-2 expired, sig-1 re-remembered


def test_replay_guard_memory_is_bounded() -> None:
    guard = ReplayGuard(window_ms=10**9, max_entries=3)
    for index in range(10):
        guard.check_and_remember(bytes([index]), NOW)
    assert len(guard) == 3
    with pytest.raises(LichenError):
        guard.check_and_remember(bytes([9]), NOW)


# --- key files and stored identity ------------------------------------------------------


@posix_only
def test_key_file_is_0600_in_a_0700_dir(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "node.key"
    key = load_or_create_key(path)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_raw(load_or_create_key(path)) == public_raw(key)
    assert [p.name for p in path.parent.iterdir()] == ["node.key"]  # no temp files left


def test_concurrent_key_creation_publishes_one_key(tmp_path: Path) -> None:
    path = tmp_path / "race" / "node.key"
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda _: load_or_create_key(path), range(16)))
    assert len({public_raw(key) for key in keys}) == 1
    assert public_raw(load_or_create_key(path)) == public_raw(keys[0])
    assert [p.name for p in path.parent.iterdir()] == ["node.key"]


@posix_only
def test_loose_key_file_mode_is_fixed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "node.key"
    key = load_or_create_key(path)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="lichen.identity"):
        loaded = load_or_create_key(path)
    assert public_raw(loaded) == public_raw(key)
    assert _mode(path) == 0o600
    assert any("0644" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_corrupt_key_file_is_an_error_and_kept(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(content)
    with pytest.raises(LichenError) as excinfo:
        load_or_create_key(path)
    assert excinfo.value.code is ErrorCode.INTERNAL
    assert str(path) in excinfo.value.message
    assert path.read_bytes() == content


@posix_only
def test_load_identity_creates_private_files(tmp_path: Path) -> None:
    identity = load_identity(tmp_path, node_name="box")
    keys = tmp_path / "keys"
    assert _mode(keys) == 0o700
    names = sorted(p.name for p in keys.iterdir())
    assert names == ["account.key", "device.cert", "device.key", "network.key"]
    assert all(_mode(keys / name) == 0o600 for name in names)
    cert = verify_device_certificate(identity.device_certificate, now_ms=NOW)
    assert cert.device_key == identity.device_public
    assert cert.account_key == identity.account_public
    assert cert.expires_ms == 0
    assert cert.name == "box"
    assert identity.peer_id == peer_id(identity.device_public)
    assert len({identity.device_public, identity.account_public, identity.network_public}) == 3
    assert repr(identity) == f"Identity(peer_id={identity.peer_id!r})"


def test_load_identity_twice_is_the_same_identity(tmp_path: Path) -> None:
    first = load_identity(tmp_path)
    second = load_identity(tmp_path)
    assert second.peer_id == first.peer_id
    assert second.network_public == first.network_public
    assert second.device_certificate == first.device_certificate


@pytest.mark.parametrize("damage", ["delete", "corrupt", "foreign"])
def test_load_identity_reissues_a_bad_certificate(tmp_path: Path, damage: str) -> None:
    first = load_identity(tmp_path)
    cert_path = tmp_path / "keys" / "device.cert"
    if damage == "delete":
        cert_path.unlink()
    elif damage == "corrupt":
        cert_path.write_bytes(b"\x00junk")
    else:
        cert_path.write_bytes(
            issue_device_certificate(generate_key(), first.device_public, now_ms=NOW)
        )
    second = load_identity(tmp_path)
    assert second.peer_id == first.peer_id
    cert = verify_device_certificate(second.device_certificate, now_ms=NOW)
    assert cert.account_key == first.account_public
    assert cert_path.read_bytes() == second.device_certificate


def test_load_identity_renames_the_certificate(tmp_path: Path) -> None:
    load_identity(tmp_path, node_name="old")
    renamed = load_identity(tmp_path, node_name="new")
    assert verify_device_certificate(renamed.device_certificate, now_ms=NOW).name == "new"
    unnamed = load_identity(tmp_path)
    assert unnamed.device_certificate == renamed.device_certificate


@posix_only
def test_load_identity_tightens_a_loose_keys_dir(tmp_path: Path) -> None:
    load_identity(tmp_path)
    (tmp_path / "keys").chmod(0o755)
    (tmp_path / "keys" / "device.key").chmod(0o640)
    load_identity(tmp_path)
    assert _mode(tmp_path / "keys") == 0o700
    assert _mode(tmp_path / "keys" / "device.key") == 0o600
