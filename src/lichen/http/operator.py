"""Operator surfaces: the routes that show how the network runs, gated by a token.

``/metrics``, ``/v1/network``, ``/ui/api/node``, ``/docs`` and ``/openapi.json``
tell a stranger which nodes exist, how loaded they are, what the gateway counts.
On a private network (and ``lichen up``) they stay open; on a public one
(``operator_surfaces = "auto"``, the default) or with ``operator_surfaces =
"operator"`` they need the operator token: a random secret written once, mode
0600, to ``<data dir>/operator.token`` and sent as ``Authorization: Bearer``
(``lichen operator token`` prints it; Prometheus reads it with
``bearer_token_file``).

A route opts in with ``dependencies=[Depends(gate)]``: the gate is an ordinary
FastAPI dependency, so a new operator route is guarded where it is declared.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import Request

from lichen.config import Settings
from lichen.errors import ErrorCode, LichenError
from lichen.http.requests import bearer_token
from lichen.identity._files import atomic_write, ensure_private_dir, tighten_mode

TOKEN_FILE = "operator.token"
TOKEN_PREFIX = "lop_"
_MAX_TOKEN_CHARS = 256

Mode = Literal["open", "operator"]


def surfaces_mode(settings: Settings) -> Mode:
    """``open`` or ``operator``; ``auto`` is ``operator`` exactly on public networks."""
    if settings.operator_surfaces == "auto":
        return "operator" if settings.network_mode == "public" else "open"
    return settings.operator_surfaces


def operator_token(data_dir: Path) -> str:
    """The operator token of ``data_dir``, created (0600) on first use."""
    path = data_dir / TOKEN_FILE
    if not path.exists():
        ensure_private_dir(data_dir, fix_existing=False)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        atomic_write(path, token.encode("ascii"), overwrite=False)  # a racing creator wins
    tighten_mode(path, 0o600)
    token = path.read_text(encoding="ascii").strip()
    if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_CHARS:
        raise LichenError(
            ErrorCode.INTERNAL, f"{path} is not an operator token; delete it to make a new one"
        )
    return token


def operator_headers(data_dir: Path) -> dict[str, str]:
    """Headers for the operator's own CLI calls; empty when no token exists yet."""
    path = data_dir / TOKEN_FILE
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return {}
    return {"authorization": f"Bearer {token}"} if token else {}


@dataclass(frozen=True)
class OperatorGate:
    """A FastAPI dependency: in ``operator`` mode, the request must carry the token."""

    mode: Mode
    token: str = ""

    @classmethod
    def build(cls, settings: Settings) -> OperatorGate:
        mode = surfaces_mode(settings)
        if mode == "open":
            return cls("open")
        return cls("operator", operator_token(settings.data_dir))

    @property
    def open(self) -> bool:
        return self.mode == "open"

    def allows(self, request: Request) -> bool:
        if self.open:
            return True
        presented = _bearer(request)
        return presented is not None and self._matches(presented)

    async def __call__(self, request: Request) -> None:
        if self.open:
            return
        presented = _bearer(request)
        if presented is None:
            raise LichenError(
                ErrorCode.UNAUTHORIZED,
                "This is an operator surface: send 'Authorization: Bearer <operator token>' "
                "(the network's operator gets it with `lichen operator token`).",
                headers={"www-authenticate": 'Bearer realm="lichen-operator"'},
            )
        if not self._matches(presented):
            raise LichenError(
                ErrorCode.FORBIDDEN, "This credential is not the operator token of this network."
            )

    def _matches(self, presented: str) -> bool:
        expected = self.token.encode("ascii")
        return hmac.compare_digest(presented.encode("utf-8", "replace"), expected)


def _bearer(request: Request) -> str | None:
    token = bearer_token(request.headers)
    return None if token is None else token[:_MAX_TOKEN_CHARS]
