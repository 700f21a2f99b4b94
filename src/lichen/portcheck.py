"""Is the HTTP port free? Asked before a role loads its model, so that a busy port is a
clear error at once (naming ``--port``), not "Address already in use" a minute later.

When the port is taken, ``/health`` on it says whether the program there is Lichen
itself (a ``lichen up`` or ``lichen tracker`` already running), which is the usual
reason on a newcomer's machine.
"""

from __future__ import annotations

import errno
import socket

import httpx

from lichen.errors import ErrorCode, LichenError

PROBE_TIMEOUT_S = 1.0


def port_in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails because something listens there.

    Binds the way the server does (``SO_REUSEADDR``), so a port that only has
    connections in TIME_WAIT counts as free, as it is for the server.
    """
    if port == 0:
        return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def lichen_version_at(host: str, port: int) -> str | None:
    """The Lichen version answering ``/health`` on ``host:port`` (http or https), or None."""
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    netloc = f"[{target}]:{port}" if ":" in target else f"{target}:{port}"
    for scheme in ("http", "https"):
        try:
            response = httpx.get(
                f"{scheme}://{netloc}/health",
                timeout=PROBE_TIMEOUT_S,
                trust_env=False,
                verify=False,  # only reading a version string from our own machine's port
            )
            body = response.json()
        except (httpx.HTTPError, ValueError):
            continue
        if isinstance(body, dict) and "version" in body and "nodes" in body:
            return str(body["version"])
    return None


def ensure_port_free(host: str, port: int) -> None:
    """Raise a CONFLICT error that names ``--port`` (and a running Lichen) if taken."""
    if not port_in_use(host, port):
        return
    version = lichen_version_at(host, port)
    if version is not None:
        raise LichenError(
            ErrorCode.CONFLICT,
            f"Lichen {version} is already running on {host}:{port} (open http://"
            f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/); stop it first, "
            f"or run this one on another port with --port {port + 1} (and its own --data-dir)",
        )
    raise LichenError(
        ErrorCode.CONFLICT,
        f"port {port} on {host} is already in use by another program; "
        f"choose another with --port {port + 1}",
    )
