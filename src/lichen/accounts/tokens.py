"""Bearer secrets: API keys and session tokens, and the digests stored for them.

Every secret has at least 256 bits from :mod:`secrets`, so a plain SHA-256 digest
is a safe thing to store and look up (no salt or slow hash is needed for
high-entropy secrets); the secret itself is shown once and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_KEY_PREFIX = "lk-"
VISIBLE_CHARS = 8  # characters after "lk-" shown in key listings
_SECRET_BYTES = 32


def new_token() -> str:
    """A random URL-safe token (43 characters, 256 bits)."""
    return secrets.token_urlsafe(_SECRET_BYTES)


def digest(secret: str) -> str:
    """The hex SHA-256 stored in place of ``secret``."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_api_key() -> tuple[str, str]:
    """A fresh API key and its visible prefix, e.g. ("lk-AbC123xy...", "lk-AbC123xy")."""
    key = API_KEY_PREFIX + new_token()
    return key, key[: len(API_KEY_PREFIX) + VISIBLE_CHARS]


def looks_like_api_key(value: str) -> bool:
    return value.startswith(API_KEY_PREFIX) and 20 <= len(value) <= 200


def same(a: str, b: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
