"""Private key files: create once, load forever after, never readable by others.

File format: **PEM, PKCS#8, unencrypted** (``-----BEGIN PRIVATE KEY-----``).
It is self-describing (a file holding an RSA or EC key, or garbage, is
recognised as wrong rather than silently misread) and standard tools read it,
e.g. ``openssl pkey -in device.key -pubout``. Keys are not encrypted at rest:
a node must start unattended, so the protection is the file mode (0600) and a
key directory of mode 0700, which :func:`load_or_create_key` enforces.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from lichen.errors import ErrorCode, LichenError
from lichen.identity._files import (
    PRIVATE_FILE_MODE,
    atomic_write,
    ensure_private_dir,
    tighten_mode,
)
from lichen.identity.signing import generate_key

__all__ = ["encode_private_key", "load_key", "load_or_create_key"]

logger = logging.getLogger(__name__)

_MAX_KEY_FILE_BYTES = 16 * 1024  # a PEM Ed25519 key is 119 bytes; anything huge is not a key


def encode_private_key(private_key: Ed25519PrivateKey) -> bytes:
    """The on-disk form of a key: PEM PKCS#8, unencrypted."""
    return private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Load the Ed25519 key at ``path``, creating it on first use.

    A missing parent directory is created with mode 0700 (an existing one is
    left as it is: it may be shared). A new key is written atomically with mode
    0600; if another process creates the same file at the same moment, both
    end up with the key that reached the disk first. An existing key file that
    other users can read is tightened to 0600 and a warning is logged.

    Raises :class:`LichenError` (``INTERNAL``) if the file exists but does not
    hold an unencrypted PEM Ed25519 key, or cannot be read.
    """
    if not path.exists():
        ensure_private_dir(path.parent, fix_existing=False)
        key = generate_key()
        if atomic_write(path, encode_private_key(key), overwrite=False):
            logger.info("created new key %s", path)
            return key
        # Lost a creation race: fall through and load the winner's key.
    return load_key(path)


def load_key(path: Path) -> Ed25519PrivateKey:
    """Load an existing key file, fixing a too-loose mode; see :func:`load_or_create_key`."""
    try:
        tighten_mode(path, PRIVATE_FILE_MODE)
        with path.open("rb") as handle:
            data = handle.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise LichenError(
            ErrorCode.INTERNAL, f"cannot read key file {path}: {exc.strerror or exc}"
        ) from exc
    return _decode_key(path, data)


def _decode_key(path: Path, data: bytes) -> Ed25519PrivateKey:
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise _corrupt(path, "the file is far too large to be a key")
    if not data.strip():
        raise _corrupt(path, "the file is empty")
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError as exc:  # raised for an encrypted key when no password is given
        raise _corrupt(
            path, "the key is password-protected; Lichen needs an unencrypted key"
        ) from exc
    except (ValueError, NotImplementedError) as exc:
        raise _corrupt(path, "it is not a PEM PKCS#8 private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise _corrupt(path, f"it holds a {type(key).__name__}, not an Ed25519 key")
    return key


def _corrupt(path: Path, reason: str) -> LichenError:
    return LichenError(
        ErrorCode.INTERNAL,
        f"key file {path} is corrupt or not a Lichen key: {reason}. Restore it from a "
        "backup, or move it aside to create a new identity (peers will see a new peer id).",
    )
