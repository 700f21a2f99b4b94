"""A process's identity on disk: its keys and its device certificate.

Layout under the data dir (directory 0700, every file 0600)::

    keys/account.key   account key (PEM PKCS#8): signs device certificates
    keys/device.key    device key: the node's peer id, handshake and receipts
    keys/network.key   network key: used when this process runs a tracker
    keys/device.cert   device certificate (msgpack), signed by account.key, no expiry

:func:`load_identity` creates what is missing and loads the rest, so it is
idempotent and safe to call on every start.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.clock import now_ms
from lichen.errors import LichenError
from lichen.identity._files import (
    PRIVATE_FILE_MODE,
    atomic_write,
    ensure_private_dir,
    tighten_mode,
)
from lichen.identity.certs import (
    MAX_CERT_BYTES,
    DeviceCertificate,
    issue_device_certificate,
    verify_device_certificate,
)
from lichen.identity.keys import load_or_create_key
from lichen.identity.signing import peer_id, public_raw

__all__ = ["KEYS_DIR", "Identity", "load_identity"]

logger = logging.getLogger(__name__)

KEYS_DIR = "keys"
"""Name of the key directory inside the data dir."""

_ACCOUNT_KEY = "account.key"
_DEVICE_KEY = "device.key"
_NETWORK_KEY = "network.key"
_DEVICE_CERT = "device.cert"


@dataclasses.dataclass(frozen=True, eq=False)
class Identity:
    """The keys a Lichen process acts with. Its repr never shows key material."""

    account_key: Ed25519PrivateKey = dataclasses.field(repr=False)
    device_key: Ed25519PrivateKey = dataclasses.field(repr=False)
    network_key: Ed25519PrivateKey = dataclasses.field(repr=False)
    device_certificate: bytes = dataclasses.field(repr=False)  # msgpack DeviceCertificate

    @property
    def peer_id(self) -> str:
        """This device's peer id, derived from the device public key."""
        return peer_id(self.device_public)

    @property
    def device_public(self) -> bytes:
        return public_raw(self.device_key)

    @property
    def account_public(self) -> bytes:
        return public_raw(self.account_key)

    @property
    def network_public(self) -> bytes:
        return public_raw(self.network_key)

    def __repr__(self) -> str:
        return f"Identity(peer_id={self.peer_id!r})"


def load_identity(data_dir: Path, *, node_name: str = "") -> Identity:
    """Load this process's identity from ``data_dir``, creating it on first start.

    The device certificate is re-issued when it is missing, unreadable, expired,
    for other keys, or named differently from a non-empty ``node_name``.
    Raises :class:`LichenError` if a key file is corrupt (never silently
    replaced: that would change the peer id).
    """
    keys_dir = data_dir / KEYS_DIR
    ensure_private_dir(keys_dir, fix_existing=True)
    account_key = load_or_create_key(keys_dir / _ACCOUNT_KEY)
    device_key = load_or_create_key(keys_dir / _DEVICE_KEY)
    network_key = load_or_create_key(keys_dir / _NETWORK_KEY)
    cert = _load_or_issue_certificate(
        keys_dir / _DEVICE_CERT, account_key, device_key, node_name=node_name
    )
    identity = Identity(account_key, device_key, network_key, cert)
    logger.debug("loaded identity %s from %s", identity.peer_id, keys_dir)
    return identity


def _load_or_issue_certificate(
    path: Path, account_key: Ed25519PrivateKey, device_key: Ed25519PrivateKey, *, node_name: str
) -> bytes:
    existing = _read_certificate(path)
    if existing is not None and _fits(existing, account_key, device_key, node_name):
        return existing
    cert = issue_device_certificate(
        account_key, public_raw(device_key), name=node_name, ttl_s=None, now_ms=now_ms()
    )
    atomic_write(path, cert, overwrite=True)
    logger.info("issued device certificate %s for %s", path, peer_id(public_raw(device_key)))
    return cert


def _read_certificate(path: Path) -> bytes | None:
    try:
        tighten_mode(path, PRIVATE_FILE_MODE)
        with path.open("rb") as handle:
            return handle.read(MAX_CERT_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("cannot read device certificate %s (%s); issuing a new one", path, exc)
        return None


def _fits(
    cert_bytes: bytes,
    account_key: Ed25519PrivateKey,
    device_key: Ed25519PrivateKey,
    node_name: str,
) -> bool:
    try:
        cert: DeviceCertificate = verify_device_certificate(cert_bytes, now_ms=now_ms())
    except LichenError as exc:
        logger.warning("device certificate is unusable (%s); issuing a new one", exc.message)
        return False
    if cert.account_key != public_raw(account_key) or cert.device_key != public_raw(device_key):
        logger.warning("device certificate does not match the keys; issuing a new one")
        return False
    return not node_name or cert.name == node_name
