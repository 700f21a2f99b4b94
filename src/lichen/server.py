"""Running an ASGI app with uvicorn under our own signal handling.

On top of uvicorn, :class:`HttpServer` adds what an open network needs:

* TLS from a certificate and key file (``tls_certfile``/``tls_keyfile``), loaded
  before binding so that a bad file is a clear error, not a dead server task;
* X-Forwarded-* headers believed only from the proxies the operator lists
  (``forwarded_allow_ips``; uvicorn's own default trusts loopback);
* a request-header deadline: uvicorn has none, so a client that opens a socket
  and trickles a header (slow loris) would hold it forever. Each connection gets
  a timer that runs until its request reaches the app, and again after each
  response until the next request does; when it fires, the socket is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import uvicorn
from fastapi import FastAPI

from lichen.errors import ErrorCode, LichenError

if TYPE_CHECKING:
    from lichen.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpOptions:
    """How the HTTP server faces the network (TLS, proxies, slow clients)."""

    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    forwarded_allow_ips: str = ""  # empty: X-Forwarded-* ignored
    header_timeout_s: float = 10.0
    keepalive_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpOptions:
        return cls(
            tls_certfile=settings.tls_certfile,
            tls_keyfile=settings.tls_keyfile,
            forwarded_allow_ips=settings.forwarded_allow_ips,
            header_timeout_s=settings.http_header_timeout_s,
            keepalive_s=settings.http_keepalive_s,
        )

    @property
    def tls(self) -> bool:
        return self.tls_certfile is not None

    def check_tls(self) -> None:
        """Load the certificate and key once, so a bad file is a typed error at start."""
        if self.tls_keyfile is not None and self.tls_certfile is None:
            raise LichenError(
                ErrorCode.INVALID_REQUEST,
                "a TLS key file needs its certificate: set --tls-certfile too",
                param="tls_certfile",
            )
        if self.tls_certfile is None:
            return
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            # An empty password: an encrypted key fails here instead of prompting on a tty.
            context.load_cert_chain(self.tls_certfile, self.tls_keyfile, password="")
        except (OSError, ssl.SSLError) as exc:
            raise LichenError(
                ErrorCode.INVALID_REQUEST,
                f"cannot load the TLS certificate {self.tls_certfile}"
                f"{f' with key {self.tls_keyfile}' if self.tls_keyfile else ''}: {exc}"
                " (the key must be PEM and not encrypted)",
                param="tls_certfile",
            ) from None


def client_tls(ca_file: Path | None) -> ssl.SSLContext | None:
    """The trust a node dials ``wss://`` with: the system's CAs plus ``ca_file`` if set."""
    if ca_file is None:
        return None
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise LichenError(
            ErrorCode.INVALID_REQUEST,
            f"cannot load the TLS CA file {ca_file}: {exc}",
            param="tls_ca_file",
        ) from None
    return context


def pinned_tls(certfile: Path) -> ssl.SSLContext:
    """Trust exactly the server certificate in ``certfile`` (a node dialing its own
    process on loopback, where the certificate's names need not match)."""
    context = ssl.create_default_context(cafile=str(certfile))
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a leaf is its own anchor
    return context


class _Server(uvicorn.Server):
    """uvicorn without its signal capture: the composition root owns shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _HeaderDeadline(asyncio.Protocol):
    """Wraps uvicorn's HTTP protocol and closes connections stuck before a request.

    The timer runs from ``connection_made`` until the app is called for a
    request, and is re-armed when the app returns (the connection waits for
    the next request's headers). A WebSocket upgrade replaces this protocol on
    the transport; the timer then does nothing.
    """

    inner_class: type[asyncio.Protocol]
    timeout_s: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._inner: Any = cast(Any, self.inner_class(*args, **kwargs))
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._active = 0
        app = self._inner.app

        async def tracked(scope: Any, receive: Any, send: Any) -> None:
            self._active += 1
            self._cancel()
            try:
                await app(scope, receive, send)
            finally:
                self._active -= 1
                if self._active == 0:
                    self._arm()

        self._inner.app = tracked

    def _arm(self) -> None:
        self._cancel()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.timeout_s, self._expired)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing() or self._active:
            return
        if transport.get_protocol() is not self:  # upgraded to a WebSocket
            return
        log.debug("closing a connection whose request headers did not arrive in time")
        transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def _guarded_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class Guarded(_HeaderDeadline):
        inner_class = AutoHTTPProtocol
        timeout_s = header_timeout_s

    return Guarded


def dial_host(host: str) -> str:
    """The address a client on this machine dials for a server bound to ``host`` (a
    wildcard bind is reached on loopback; an IPv6 literal gets its brackets)."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class HttpServer:
    def __init__(
        self, app: FastAPI, *, host: str, port: int, options: HttpOptions | None = None
    ) -> None:
        self.options = options or HttpOptions()
        allow = self.options.forwarded_allow_ips.strip()
        tls = self.options
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http=_guarded_protocol(self.options.header_timeout_s),
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            ws_max_size=8 * 1024 * 1024,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            timeout_keep_alive=max(1, round(self.options.keepalive_s)),
            # Believe X-Forwarded-* only from listed proxies; none by default.
            proxy_headers=bool(allow),
            forwarded_allow_ips=allow or None,
            ssl_certfile=str(tls.tls_certfile) if tls.tls_certfile else None,
            ssl_keyfile=str(tls.tls_keyfile) if tls.tls_keyfile else None,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def scheme(self) -> str:
        """``https`` when serving TLS, else ``http``."""
        return "https" if self.options.tls else "http"

    async def start(self) -> int:
        """Bind, start serving, and return the bound port (useful with port 0).

        Binding here (not inside uvicorn) turns "address in use" into an OSError
        the CLI can explain, instead of uvicorn exiting the process.
        """
        self.options.check_tls()
        config = self._server.config
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP; without it Nagle holds each SSE chunk for a delayed ACK (~40 ms).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((config.host, config.port))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


# After the drain's grace period, closing (engine, database, sockets) gets this long.
CLOSE_MARGIN_S = 10.0
EXIT_FORCED = 1  # exit status when the deadline, not the clean path, ended the process


def install_shutdown_signals(
    grace_s: float | None = None, *, close_margin_s: float = CLOSE_MARGIN_S
) -> asyncio.Event:
    """An event set on SIGINT or SIGTERM.

    With ``grace_s``, the signal also starts a deadline: if the process has not
    exited ``grace_s + close_margin_s`` seconds later (a llama.cpp call that never
    returns keeps a worker thread, and so the interpreter, alive), it logs why and
    exits at once. A second signal exits at once too.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            _force_exit("a second stop signal arrived")
        stop.set()
        if grace_s is not None:
            arm_exit_deadline(grace_s + close_margin_s)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    return stop


def arm_exit_deadline(seconds: float) -> None:
    """The process is shutting down: if it has not exited ``seconds`` from now, log why
    and exit at once (only for a process that is ours, never inside a test's)."""
    timer = threading.Timer(seconds, _force_exit, args=(f"shutdown took longer than {seconds:g}s",))
    timer.daemon = True  # never keeps the process alive itself
    timer.name = "shutdown-deadline"
    timer.start()


def _force_exit(why: str) -> None:
    log.error("%s (an engine call that never returns?); exiting now without waiting for it", why)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(EXIT_FORCED)
