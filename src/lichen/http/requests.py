"""What an HTTP request says about itself: its bearer token, whether it comes from
this machine. Read here once for every surface (API keys, the operator gate, the
privacy pipeline's kept-data subject, rate-limit exemptions for loopback clients)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None when there is no such header,
    it names another scheme, or the token is empty."""
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def is_loopback_address(host: str) -> bool:
    """Whether ``host`` is a loopback IP address (``127.0.0.0/8``, ``::1``); names are not."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
