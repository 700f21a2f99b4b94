"""DNS rebinding and cross-site requests: check ``Host``, ``Origin`` and ``Sec-Fetch-Site``.

A web page on ``evil.example`` can make its own name resolve to 127.0.0.1 and
then talk to a gateway on the victim's loopback *as the same origin*: the
browser sends ``Host: evil.example:8470``. Two defences, on every HTTP route:

- **Host**: a request must name a host the server answers to (:class:`HostPolicy`):
  a loopback name (``localhost``, ``*.localhost``, 127.0.0.0/8, ``::1``), an IP
  address (a rebinding attack needs a DNS name), the host of ``public_url``, the
  bound address, or a name in ``allowed_hosts``. A gateway bound to a public
  address with no ``allowed_hosts`` answers to any name (set it to close that).
  Whatever the policy, *trust for being on this machine* (the node page's
  operator controls) requires a loopback client **and** a loopback ``Host``
  (:func:`is_local_request`): a rebinding page never has one.
- **Origin**: a state-changing request (POST, PUT, PATCH, DELETE) that a browser
  marks cross-site (``Sec-Fetch-Site: cross-site`` or ``same-site``) or whose
  ``Origin`` is not the ``Host`` it was sent to is refused (403). Clients that
  are not browsers send neither header and are unaffected.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from lichen.errors import ErrorCode, LichenError
from lichen.http.errors import error_response
from lichen.http.requests import is_loopback_address

if TYPE_CHECKING:
    from lichen.config import Settings

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CROSS_SITE = frozenset({"cross-site", "same-site"})
_WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})


def split_host(value: str) -> tuple[str, int | None]:
    """``Host``-style ``name[:port]`` (IPv6 in brackets) as (lower-case name, port)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    return name.rstrip("."), int(port) if port.isdigit() else None


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    return is_loopback_address(name)


def is_local_request(request: Request) -> bool:
    """A request from this machine, sent to this machine by a loopback name (not a
    rebinding page, not public traffic that a local reverse proxy forwards)."""
    client = request.client.host if request.client is not None else ""
    if not (is_loopback_address(client) or client == "testclient"):
        return False
    name, _ = split_host(request.headers.get("host", ""))
    return is_loopback_name(name) or name == "testserver"


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The host names this server answers to (besides loopback names and IPs)."""

    names: frozenset[str] = field(default_factory=frozenset)
    any_host: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        configured = {n.strip().lower() for n in settings.allowed_hosts.split(",") if n.strip()}
        names = set(configured)
        if settings.public_url:
            names.add(split_host(urlsplit(settings.public_url).netloc.rpartition("@")[2])[0])
        bind = settings.host.strip().lower().strip("[]")
        if bind not in _WILDCARD_BINDS:
            names.add(bind)
        public_bind = not is_loopback_name(bind)
        return cls(
            names=frozenset(n for n in names if n and n != "*"),
            any_host="*" in configured or (public_bind and not configured),
        )

    def allows(self, name: str) -> bool:
        """``name`` ("" when no Host was sent: not a browser, so not a rebinding page)."""
        if self.any_host or not name or is_loopback_name(name) or _ip(name) is not None:
            return True
        return name in self.names


def _cross_site(headers: Headers) -> str | None:
    """Why a state-changing request is cross-site, or None."""
    if headers.get("sec-fetch-site", "").lower() in CROSS_SITE:
        return "the browser marked this request cross-site"
    origin = headers.get("origin")
    if origin is None:
        return None
    parts = urlsplit(origin.strip().lower())
    if origin.strip().lower() == "null" or not parts.hostname:
        return "requests from an opaque origin are refused"
    host, port = split_host(headers.get("host", ""))
    origin_port = parts.port or (443 if parts.scheme == "https" else 80)
    if parts.hostname.strip("[]") != host or (port is not None and port != origin_port):
        return "the request's Origin is not this server"
    return None


class OriginGuardMiddleware:
    """Refuses unknown ``Host`` names and cross-site state-changing requests (403)."""

    def __init__(self, app: ASGIApp, policy: HostPolicy | None = None) -> None:
        self.app = app
        self.policy = policy or HostPolicy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        name, _ = split_host(headers.get("host", ""))
        reason = None
        if not self.policy.allows(name):
            reason = (
                f"this server does not answer to the host name {name[:100]!r} (DNS rebinding "
                "protection); the operator can add it to LICHEN_ALLOWED_HOSTS"
            )
        elif scope["method"] in STATE_CHANGING:
            reason = _cross_site(headers)
        if reason is None:
            await self.app(scope, receive, send)
            return
        await error_response(LichenError(ErrorCode.FORBIDDEN, reason))(scope, receive, send)
