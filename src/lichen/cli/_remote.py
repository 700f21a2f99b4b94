"""The operator's commands from any machine: ``--url`` + an operator key → the admin API.

Without ``--url`` the commands work on this machine's data dir, as ever. With it,
they call ``/v1/admin/...`` on that gateway or tracker, authenticated by an
operator key (an API key, with the ``account`` scope, of an account that ``lichen
operator grant`` made an operator), given with ``--operator-key`` or, better (it
then stays out of the shell history and the process list), ``LICHEN_OPERATOR_KEY``.
The key is sent only in the ``Authorization`` header and never printed.

Every failure is one clear line and exit status 1: the server cannot be reached,
its TLS certificate cannot be verified (``--ca-file`` trusts a private CA), the key
is refused (401) or is not an operator's (403), or the server's typed error.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import httpx
import typer

from lichen import __version__
from lichen.cli._operator import fail

ADMIN_PATH = "/v1/admin"
KEY_ENV = "LICHEN_OPERATOR_KEY"
TIMEOUT_S = 30.0

RemoteUrl = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="A gateway's or tracker's base URL (https://…): do this through its admin API "
        f"with an operator key (--operator-key or {KEY_ENV}) instead of on this machine.",
        show_default=False,
    ),
]
OperatorKey = Annotated[
    str | None,
    typer.Option(
        "--operator-key",
        envvar=KEY_ENV,
        help="An operator key (an API key of an operator account) for --url; prefer the "
        f"{KEY_ENV} environment variable. Never printed.",
        show_default=False,
        show_envvar=True,
    ),
]
CaFile = Annotated[
    Path | None,
    typer.Option(
        "--ca-file",
        help="Trust this CA certificate (PEM) for --url, e.g. a tracker's own certificate.",
        exists=True,
        dir_okay=False,
        show_default=False,
    ),
]


def segment(value: str) -> str:
    """``value`` as one URL path segment (a node name may hold '?' or '#'; '.' and '..'
    must not climb the path)."""
    if not value:
        raise fail("an empty id or name matches nothing")
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


class AdminClient:
    """A synchronous client of one server's admin API; errors become ``fail(...)``."""

    def __init__(
        self,
        url: str,
        key: str | None,
        *,
        ca_file: Path | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise fail(f"--url must be an http:// or https:// base URL, not {url!r}")
        key = (key or "").strip()
        if not key:
            raise fail(
                f"--url needs an operator key: --operator-key KEY or {KEY_ENV} "
                "(an API key of an operator account; see `lichen operator grant`)"
            )
        self.base = url.strip().rstrip("/")
        self.host = parts.netloc
        self._key = key
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            verify = ssl.create_default_context(cafile=str(ca_file))
        self._verify = verify
        self._transport = transport

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.call("POST", path, body)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base}{ADMIN_PATH}{path}"
        headers = {"authorization": f"Bearer {self._key}", "user-agent": f"lichen/{__version__}"}
        try:
            with httpx.Client(
                verify=self._verify,
                timeout=TIMEOUT_S,
                trust_env=False,
                transport=self._transport,
            ) as client:
                response = client.request(method, url, json=body, headers=headers)
        except httpx.TimeoutException:
            raise fail(f"{self.host} did not answer within {TIMEOUT_S:.0f}s") from None
        except httpx.HTTPError as exc:
            raise fail(self._transport_problem(exc)) from None
        return self._result(response)

    def _transport_problem(self, exc: httpx.HTTPError) -> str:
        text = _reason(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            return (
                f"cannot verify the TLS certificate of {self.host} ({text}); if it is "
                "self-signed or from a private CA, pass --ca-file with that certificate"
            )
        if isinstance(_root(exc), ssl.SSLError):
            return f"TLS with {self.host} failed ({text}); does it serve https:// on that port?"
        return f"cannot reach {self.base}: {text}"

    def _result(self, response: httpx.Response) -> Any:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.is_success and payload is not None:
            return payload
        message = _error_message(payload)
        status = response.status_code
        if status == 401:
            raise fail(f"{self.host} refused the operator key (401): {message or 'not accepted'}")
        if status == 403:
            raise fail(f"{self.host} refused (403): {message or 'forbidden'}")
        if status == 404 and message in ("", "Not Found"):
            raise fail(
                f"{self.base} has no admin API (404 on {ADMIN_PATH}): is it a Lichen gateway "
                "or tracker, at its base URL, of a version with remote administration?"
            )
        if payload is None and response.is_success:
            raise fail(f"{self.base} answered something that is not JSON (HTTP {status})")
        raise fail(message or f"{self.host} answered HTTP {status}")


def _error_message(payload: Any) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return str(payload["error"].get("message") or "")
    return ""


def _root(exc: BaseException) -> BaseException:
    seen: set[int] = set()
    while exc.__cause__ is not None or exc.__context__ is not None:
        nxt = exc.__cause__ or exc.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        exc = nxt
    return exc


def _reason(exc: BaseException) -> str:
    root = _root(exc)
    text = str(root) or str(exc) or type(root).__name__
    return text.strip()


def admin_client(url: str, key: str | None, ca_file: Path | None = None) -> AdminClient:
    return AdminClient(url, key, ca_file=ca_file)
