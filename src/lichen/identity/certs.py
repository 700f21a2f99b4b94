"""Device certificates: an account key vouching for one device (node) key.

A certificate is a msgpack-encoded :class:`DeviceCertificate`. Its signature is
an Ed25519 signature by ``account_key`` over ``b"lichen-device-cert-v1"`` followed
by the canonical msgpack encoding of the same certificate with
``signature=b""``, so it covers every other field.

Encodings are canonical: :func:`verify_device_certificate` refuses bytes that
do not re-encode to themselves (unknown fields, reordered keys, padded
integers), so one certificate has exactly one byte form.

Verification only proves that the embedded account key signed this device key.
Whether that account is a member of the network (known, approved, not revoked)
is the tracker's decision, made against its own records.
"""

from __future__ import annotations

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import PUBLIC_KEY_SIZE, public_raw, sign, verify

__all__ = [
    "CERT_DOMAIN",
    "MAX_CERT_BYTES",
    "MAX_NAME_CHARS",
    "DeviceCertificate",
    "issue_device_certificate",
    "verify_device_certificate",
]

CERT_DOMAIN = b"lichen-device-cert-v1"
"""Domain-separation tag prepended to the signed bytes of every certificate."""

MAX_CERT_BYTES = 2048
"""Largest certificate accepted; a real one is about 200 bytes."""

MAX_NAME_CHARS = 128
"""Longest device name a certificate may carry."""


class DeviceCertificate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An account key's statement that ``device_key`` belongs to it."""

    device_key: bytes  # raw Ed25519 public key of the device (node); its peer id derives from it
    account_key: bytes  # raw Ed25519 public key of the account that signs this certificate
    issued_ms: int  # wall-clock time of issue, Unix milliseconds
    expires_ms: int  # Unix milliseconds after which the certificate is void; 0 = never
    name: str  # human-readable device name chosen by the owner ("" = unnamed)
    signature: bytes  # account-key signature over CERT_DOMAIN + this struct with signature=b""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(DeviceCertificate)


def _signed_bytes(cert: DeviceCertificate) -> bytes:
    return CERT_DOMAIN + _encoder.encode(msgspec.structs.replace(cert, signature=b""))


def issue_device_certificate(
    account_key: Ed25519PrivateKey,
    device_public_raw: bytes,
    *,
    name: str = "",
    ttl_s: int | None = None,
    now_ms: int,
) -> bytes:
    """Sign a certificate for ``device_public_raw``; returns its msgpack bytes.

    ``ttl_s=None`` issues a certificate that never expires. Raises ``ValueError``
    for arguments no verifier would accept (wrong key size, empty TTL, long name).
    """
    if len(device_public_raw) != PUBLIC_KEY_SIZE:
        raise ValueError(f"device key must be {PUBLIC_KEY_SIZE} bytes")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"device name is longer than {MAX_NAME_CHARS} characters")
    if ttl_s is not None and ttl_s <= 0:
        raise ValueError("ttl_s must be positive, or None for no expiry")
    if now_ms < 0:
        raise ValueError("now_ms must not be negative")
    unsigned = DeviceCertificate(
        device_key=bytes(device_public_raw),
        account_key=public_raw(account_key),
        issued_ms=now_ms,
        expires_ms=0 if ttl_s is None else now_ms + ttl_s * 1000,
        name=name,
        signature=b"",
    )
    signed = msgspec.structs.replace(unsigned, signature=sign(account_key, _signed_bytes(unsigned)))
    return _encoder.encode(signed)


def certificate_bytes(cert: DeviceCertificate) -> bytes:
    """The canonical encoding of ``cert`` (the bytes its holder presented)."""
    return _encoder.encode(cert)


def verify_device_certificate(cert_bytes: bytes, *, now_ms: int) -> DeviceCertificate:
    """Decode and check a certificate; returns it only if genuine and current.

    Raises :class:`LichenError` with ``HANDSHAKE_FAILED`` when the bytes are
    malformed, not canonical or the signature does not verify against the
    embedded account key, and with ``IDENTITY_EXPIRED`` when it has expired.
    """
    if len(cert_bytes) > MAX_CERT_BYTES:
        raise _refused(f"device certificate is larger than {MAX_CERT_BYTES} bytes")
    try:
        cert = _decoder.decode(cert_bytes)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError too
        raise _refused(f"malformed device certificate: {exc}") from exc
    if _encoder.encode(cert) != bytes(cert_bytes):
        raise _refused("device certificate is not canonically encoded")
    if len(cert.device_key) != PUBLIC_KEY_SIZE or len(cert.account_key) != PUBLIC_KEY_SIZE:
        raise _refused("device certificate carries a key of the wrong size")
    if cert.issued_ms < 0 or cert.expires_ms < 0 or len(cert.name) > MAX_NAME_CHARS:
        raise _refused("device certificate has out-of-range fields")
    if cert.expires_ms and cert.expires_ms <= cert.issued_ms:
        raise _refused("device certificate expires before it was issued")
    if not verify(cert.account_key, cert.signature, _signed_bytes(cert)):
        raise _refused("device certificate signature does not verify")
    if cert.expires_ms and now_ms >= cert.expires_ms:
        raise LichenError(
            ErrorCode.IDENTITY_EXPIRED,
            "device certificate has expired; ask the account owner to issue a new one",
        )
    return cert


def _refused(message: str) -> LichenError:
    return LichenError(ErrorCode.HANDSHAKE_FAILED, message)
