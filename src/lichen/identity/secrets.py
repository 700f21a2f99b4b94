"""The node's secret store: upstream API keys and the like, encrypted at rest.

``<data dir>/secrets.json`` (mode 0600) maps each secret's name to an AES-256-GCM
ciphertext. The key is derived with HKDF-SHA256 from the node's device key
(``keys/device.key``), and each ciphertext is bound to its name as associated
data, so a value moved under another name does not decrypt. What this protects:
the file alone (a backup, a copied config, a pasted directory listing) reveals
no secret. What it does not: anyone who can read the whole data dir, device key
included, can decrypt it, as the node itself must to start unattended.

Values are never logged, printed or put in exception messages; only names are.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from lichen.errors import ErrorCode, LichenError
from lichen.identity._files import (
    PRIVATE_FILE_MODE,
    atomic_write,
    ensure_private_dir,
    tighten_mode,
)
from lichen.identity.store import load_identity

__all__ = ["SECRETS_FILE", "SecretStore", "validate_secret_name"]

log = logging.getLogger(__name__)

SECRETS_FILE = "secrets.json"
FORMAT_VERSION = 1
_SALT = b"lichen secret store"
_INFO = b"lichen/secrets/aes-256-gcm/v1"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_SECRET_BYTES = 64 * 1024


def validate_secret_name(name: str) -> str:
    """Secret names: 1-64 characters of letters, digits, ``_``, ``.``, ``-``."""
    if not _NAME.fullmatch(name):
        raise LichenError(
            ErrorCode.INVALID_REQUEST,
            f"invalid secret name {name!r}: use 1-64 letters, digits, '_', '.' or '-'",
            param="name",
        )
    return name


def derive_key(device_key: Ed25519PrivateKey) -> bytes:
    """The store's AES-256 key, derived from the device key with HKDF-SHA256."""
    raw = device_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(raw)


def _aad(name: str) -> bytes:
    return b"lichen-secret:" + name.encode()


class SecretStore:
    """Named secrets in one encrypted file; every call reads or writes the file."""

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return f"SecretStore({str(self.path)!r})"

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SecretStore:
        """The store of the node whose identity lives in ``data_dir`` (created if missing)."""
        identity = load_identity(data_dir)
        return cls(data_dir / SECRETS_FILE, derive_key(identity.device_key))

    def _read(self) -> dict[str, Any]:
        try:
            tighten_mode(self.path, PRIVATE_FILE_MODE)
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(raw)
            entries = doc["secrets"]
            if doc.get("version") != FORMAT_VERSION or not isinstance(entries, dict):
                raise ValueError("unknown format")
        except (ValueError, KeyError, TypeError):
            raise LichenError(
                ErrorCode.INTERNAL, f"the secret store {self.path} is not readable"
            ) from None
        return entries

    def _write(self, entries: dict[str, Any]) -> None:
        ensure_private_dir(self.path.parent, fix_existing=False)
        doc = {"version": FORMAT_VERSION, "secrets": dict(sorted(entries.items()))}
        atomic_write(self.path, json.dumps(doc, indent=1).encode(), overwrite=True)

    def names(self) -> list[str]:
        return sorted(self._read())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._read()

    def set(self, name: str, value: str) -> None:
        validate_secret_name(name)
        data = value.encode()
        if not data:
            raise LichenError(ErrorCode.INVALID_REQUEST, "a secret cannot be empty", param="value")
        if len(data) > MAX_SECRET_BYTES:
            raise LichenError(ErrorCode.INVALID_REQUEST, "secret too large", param="value")
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, data, _aad(name))
        entries = self._read()
        entries[name] = {
            "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(sealed).decode(),
        }
        self._write(entries)
        log.info("stored secret %s", name)

    def get(self, name: str) -> str:
        entry = self._read().get(name)
        if entry is None:
            raise LichenError(ErrorCode.NOT_FOUND, f"no secret named {name!r}", param="name")
        try:
            nonce = base64.b64decode(entry["nonce"], validate=True)
            sealed = base64.b64decode(entry["ciphertext"], validate=True)
            return self._aead.decrypt(nonce, sealed, _aad(name)).decode()
        except (InvalidTag, KeyError, TypeError, ValueError):
            raise LichenError(
                ErrorCode.INTERNAL,
                f"secret {name!r} cannot be decrypted (was the device key replaced?)",
            ) from None

    def remove(self, name: str) -> bool:
        entries = self._read()
        if entries.pop(name, None) is None:
            return False
        self._write(entries)
        log.info("removed secret %s", name)
        return True
