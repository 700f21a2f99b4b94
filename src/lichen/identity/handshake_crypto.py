"""The cryptography of the node <-> tracker handshake, with no I/O.

The transport drives the messages in :mod:`lichen.wire.messages`; this module
makes and checks what goes in them::

    node    -> tracker  Hello(device_cert, node_nonce)
    tracker -> node     Challenge(network_key, network_sig=tracker_proof(...), tracker_nonce)
    node    -> tracker  Auth(timestamp_ms, signature=node_auth(...))
    tracker -> node     Welcome

Signed bytes (nonces are exactly :data:`NONCE_SIZE` bytes, so the
concatenations cannot be re-split; the timestamp is 8 bytes, big-endian)::

    tracker proof:  b"lichen-tracker-v1"   + node_nonce + tracker_nonce
    node auth:      b"lichen-node-auth-v1" + tracker_nonce + timestamp_ms

The node-auth tag also means a tracker can never choose a ``tracker_nonce``
that makes a node sign a manifest, receipt or other device-key message.

The handshake does not bind the transport channel: run it over ``wss://``
wherever the link leaves the machine.
"""

from __future__ import annotations

import collections
import hashlib
import secrets

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import sign, verify

__all__ = [
    "DEFAULT_MAX_SKEW_MS",
    "NODE_AUTH_DOMAIN",
    "NONCE_SIZE",
    "TRACKER_PROOF_DOMAIN",
    "ReplayGuard",
    "new_nonce",
    "node_auth",
    "tracker_proof",
    "verify_node_auth",
    "verify_tracker_proof",
]

NONCE_SIZE = 32
"""Bytes in every handshake nonce."""

DEFAULT_MAX_SKEW_MS = 60_000
"""How far a node's clock may be from the tracker's, either way."""

TRACKER_PROOF_DOMAIN = b"lichen-tracker-v1"
NODE_AUTH_DOMAIN = b"lichen-node-auth-v1"

_MAX_TIMESTAMP_MS = 2**63 - 1


def new_nonce() -> bytes:
    """A fresh random nonce of :data:`NONCE_SIZE` bytes."""
    return secrets.token_bytes(NONCE_SIZE)


# --- tracker proves it holds the network key --------------------------------------------


def _tracker_message(node_nonce: bytes, tracker_nonce: bytes) -> bytes:
    return TRACKER_PROOF_DOMAIN + node_nonce + tracker_nonce


def tracker_proof(network_key: Ed25519PrivateKey, node_nonce: bytes, tracker_nonce: bytes) -> bytes:
    """The tracker's signature for ``Challenge.network_sig``.

    Raises :class:`LichenError` ``HANDSHAKE_FAILED`` if either nonce is not
    :data:`NONCE_SIZE` bytes: ``node_nonce`` comes from the peer, and a node that
    sends a malformed nonce is refused before the tracker signs anything.
    """
    if len(node_nonce) != NONCE_SIZE or len(tracker_nonce) != NONCE_SIZE:
        raise _bad_nonce()
    return sign(network_key, _tracker_message(node_nonce, tracker_nonce))


def verify_tracker_proof(
    network_public_raw: bytes, signature: bytes, node_nonce: bytes, tracker_nonce: bytes
) -> bool:
    """True only if the tracker signed this exact pair of nonces with the network key."""
    if len(node_nonce) != NONCE_SIZE or len(tracker_nonce) != NONCE_SIZE:
        return False
    return verify(network_public_raw, signature, _tracker_message(node_nonce, tracker_nonce))


# --- node proves it holds the device key ------------------------------------------------


def _node_message(tracker_nonce: bytes, timestamp_ms: int) -> bytes:
    return NODE_AUTH_DOMAIN + tracker_nonce + timestamp_ms.to_bytes(8, "big")


def node_auth(device_key: Ed25519PrivateKey, tracker_nonce: bytes, timestamp_ms: int) -> bytes:
    """The node's signature for ``Auth.signature``.

    Raises :class:`LichenError` ``HANDSHAKE_FAILED`` if ``tracker_nonce`` (from
    the peer) is not :data:`NONCE_SIZE` bytes, so a node never signs whatever a
    tracker hands it, and ``ValueError`` for a timestamp outside ``0 .. 2**63-1``.
    """
    if len(tracker_nonce) != NONCE_SIZE:
        raise _bad_nonce()
    if not 0 <= timestamp_ms <= _MAX_TIMESTAMP_MS:
        raise ValueError("timestamp_ms is out of range")
    return sign(device_key, _node_message(tracker_nonce, timestamp_ms))


def verify_node_auth(
    device_public_raw: bytes,
    signature: bytes,
    tracker_nonce: bytes,
    timestamp_ms: int,
    *,
    now_ms: int,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
) -> None:
    """Check ``Auth`` from a node; returns only if it is genuine and fresh.

    Raises :class:`LichenError` ``HANDSHAKE_FAILED`` if the signature does not
    verify (checked first, so an unauthenticated message learns nothing about
    the clock) and ``REPLAYED`` if the signed timestamp is more than
    ``max_skew_ms`` away from ``now_ms``.
    """
    if (
        len(tracker_nonce) != NONCE_SIZE
        or not 0 <= timestamp_ms <= _MAX_TIMESTAMP_MS
        or not verify(device_public_raw, signature, _node_message(tracker_nonce, timestamp_ms))
    ):
        raise LichenError(ErrorCode.HANDSHAKE_FAILED, "node authentication signature is invalid")
    if abs(now_ms - timestamp_ms) > max_skew_ms:
        raise LichenError(
            ErrorCode.REPLAYED,
            f"node authentication timestamp is {abs(now_ms - timestamp_ms) // 1000} s away "
            f"from the tracker's clock (at most {max_skew_ms // 1000} s allowed); check the "
            "node's clock",
        )


def _bad_nonce() -> LichenError:
    return LichenError(ErrorCode.HANDSHAKE_FAILED, f"handshake nonces must be {NONCE_SIZE} bytes")


# --- replay memory ----------------------------------------------------------------------


class ReplayGuard:
    """Remembers values (signatures, or device key + nonce) seen within a window.

    :meth:`check_and_remember` refuses a value seen less than ``window_ms`` ago.
    Memory is bounded: values are stored as 32-byte digests, expired ones are
    dropped as time passes, and beyond ``max_entries`` the oldest are evicted.
    Eviction trades a theoretical replay of a very old entry for liveness;
    callers check freshness (:func:`verify_node_auth`) and only remember
    authenticated values, so a flood cannot push out live entries cheaply.

    Not thread-safe; one guard belongs to one event loop.
    """

    def __init__(
        self, *, window_ms: int = 2 * DEFAULT_MAX_SKEW_MS, max_entries: int = 100_000
    ) -> None:
        if window_ms <= 0 or max_entries <= 0:
            raise ValueError("window_ms and max_entries must be positive")
        self._window_ms = window_ms
        self._max_entries = max_entries
        self._expiry: collections.OrderedDict[bytes, int] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def check_and_remember(self, key: bytes, now_ms: int) -> None:
        """Raise :class:`LichenError` ``REPLAYED`` if ``key`` was seen in the window."""
        self._expire(now_ms)
        digest = hashlib.sha256(key).digest()
        expires = self._expiry.get(digest)
        if expires is not None and now_ms < expires:
            raise LichenError(ErrorCode.REPLAYED, "this handshake was already used")
        self._expiry[digest] = now_ms + self._window_ms
        self._expiry.move_to_end(digest)
        while len(self._expiry) > self._max_entries:
            self._expiry.popitem(last=False)

    def _expire(self, now_ms: int) -> None:
        # Entries are in insertion order, which is expiry order while the clock moves
        # forward; after a clock step back, a few stale entries wait for eviction.
        while self._expiry:
            oldest, expires = next(iter(self._expiry.items()))
            if expires > now_ms:
                return
            del self._expiry[oldest]
