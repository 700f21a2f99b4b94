"""Ed25519 signatures and peer ids: the primitives every other identity module uses.

Keys travel on the wire as *raw* 32-byte public keys; signatures are the raw
64-byte Ed25519 signatures. :func:`verify` is total: it answers ``False`` for a
bad signature, a malformed key or a wrong-sized signature and never raises, so
callers can turn a ``False`` into the right :class:`~lichen.errors.ErrorCode`
for their context.

Every message Lichen signs starts with its own domain-separation tag (each
module that signs defines one, e.g. ``b"lichen-device-cert-v1"``), so a
signature made for one purpose can never be passed off as another.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "PEER_ID_PREFIX",
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "generate_key",
    "is_peer_id",
    "peer_id",
    "public_raw",
    "sign",
    "verify",
]

PUBLIC_KEY_SIZE = 32
"""Length of a raw Ed25519 public key."""

SIGNATURE_SIZE = 64
"""Length of a raw Ed25519 signature."""

PEER_ID_PREFIX = "lp-"
"""Every peer id starts with this, so ids are recognisable in logs and URLs."""

_PEER_ID_DIGEST_BYTES = 20  # 160 bits -> exactly 32 base32 characters, no padding
_PEER_ID_LENGTH = len(PEER_ID_PREFIX) + 32
_BASE32_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def generate_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key from the operating system's CSPRNG."""
    return Ed25519PrivateKey.generate()


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    """Sign ``data``; returns the raw 64-byte signature."""
    return private_key.sign(data)


def verify(public_key_raw: bytes, signature: bytes, data: bytes) -> bool:
    """True only if ``signature`` is a valid signature of ``data`` by ``public_key_raw``.

    Never raises: a malformed key, a wrong-sized signature, or anything that is
    not bytes all answer ``False``.
    """
    if not isinstance(public_key_raw, bytes | bytearray | memoryview):
        return False
    if not isinstance(signature, bytes | bytearray | memoryview):
        return False
    if not isinstance(data, bytes | bytearray | memoryview):
        return False
    if len(public_key_raw) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes(public_key_raw))
        key.verify(bytes(signature), bytes(data))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def public_raw(private_key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key that goes on the wire."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def peer_id(public_raw: bytes) -> str:
    """The stable, human-friendly id of a device public key.

    ``"lp-"`` followed by the lowercase, unpadded base32 of the first 20 bytes
    of ``sha256(public_raw)``: 35 characters, URL- and filename-safe, case
    insensitive, and without the ambiguous characters 0, 1 and 8.

    Raises ``ValueError`` if ``public_raw`` is not a 32-byte key: deriving an id
    from anything else is a programming error.
    """
    if len(public_raw) != PUBLIC_KEY_SIZE:
        raise ValueError(f"a public key is {PUBLIC_KEY_SIZE} bytes, got {len(public_raw)}")
    digest = hashlib.sha256(public_raw).digest()[:_PEER_ID_DIGEST_BYTES]
    return PEER_ID_PREFIX + base64.b32encode(digest).decode("ascii").lower()


def is_peer_id(value: str) -> bool:
    """True if ``value`` has the shape of a peer id (it says nothing about who owns it)."""
    if len(value) != _PEER_ID_LENGTH or not value.startswith(PEER_ID_PREFIX):
        return False
    return set(value[len(PEER_ID_PREFIX) :]) <= _BASE32_ALPHABET
