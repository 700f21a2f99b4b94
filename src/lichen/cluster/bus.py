"""One NATS connection with typed publish and subscribe.

A malformed message on a subscription is dropped and logged (rate-limited): the bus
is the operator's own infrastructure, but a bug in one process must not stop the
others' handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from lichen.cluster.messages import BusMessage, decode, encode
from lichen.errors import ErrorCode, LichenError

log = logging.getLogger(__name__)

Handler = Callable[[BusMessage], Awaitable[None]]


class Bus:
    """A connected NATS client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._subscriptions: list[Subscription] = []
        self._complaints = _Throttled()
        self.closing = False

    @classmethod
    async def connect(cls, url: str, *, name: str, wait_s: float = 10.0) -> Bus:
        """Connect, waiting up to ``wait_s`` for the server to come up; a typed error if
        it does not. Once connected, the client reconnects by itself for as long as the
        process runs (a NATS restart must not end a role)."""
        await _reachable(url, wait_s)
        bus_log = _Throttled()
        closing: list[Bus] = []  # the Bus, once built: its own close is no outage

        async def error(exc: Exception) -> None:
            bus_log.warning(f"message bus error: {type(exc).__name__}: {exc}")

        async def disconnected() -> None:
            if not (closing and closing[0].closing):
                bus_log.warning("lost the message bus; reconnecting")

        async def reconnected() -> None:
            log.info("reconnected to the message bus")

        try:
            client = await nats.connect(
                url,
                name=name,
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                allow_reconnect=True,
                error_cb=error,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
            )
        except Exception as exc:  # nats raises several unrelated types for "unreachable"
            raise _unreachable(url, exc) from exc
        bus = cls(client)
        closing.append(bus)
        return bus

    @property
    def connected(self) -> bool:
        return bool(self.client.is_connected)

    async def publish(self, subject: str, msg: BusMessage) -> bool:
        """Send ``msg``; False (logged, at most every ten seconds) when the bus cannot take
        it. Callers that need delivery (a job's frames) act on False; for beats and
        announcements the next one repairs a lost one."""
        try:
            await self.client.publish(subject, encode(msg))
        except (nats.errors.Error, OSError, RuntimeError) as exc:  # closed, reconnecting, full
            self._complaints.warning(f"could not publish on the message bus: {exc!r}")
            return False
        return True

    async def subscribe(self, subject: str, handler: Handler) -> None:
        async def deliver(raw: Msg) -> None:
            try:
                msg = decode(raw.data)
            except LichenError as error:
                self._complain(f"dropped a message on {raw.subject}: {error.message}")
                return
            try:
                await handler(msg)
            except Exception:  # one bad message must not end the subscription
                log.exception("handling a %s on %s failed", type(msg).__name__, raw.subject)

        self._subscriptions.append(await self.client.subscribe(subject, cb=deliver))

    async def flush(self) -> None:
        await self.client.flush(timeout=5)

    async def close(self) -> None:
        self.closing = True
        for sub in self._subscriptions:
            try:
                await sub.unsubscribe()
            except Exception:  # already closed by a lost connection
                log.debug("unsubscribe failed", exc_info=True)
        self._subscriptions.clear()
        if not self.client.is_closed:
            try:
                await self.client.close()
            except (nats.errors.Error, OSError, RuntimeError) as exc:  # the server died first
                log.debug("closing the bus connection: %r", exc)

    def _complain(self, message: str) -> None:
        self._complaints.warning(message)


class _Throttled:
    """Logs a warning at most every ten seconds (a broken peer must not flood the log)."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last = -every_s

    def warning(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            log.warning("%s", message)


async def _reachable(url: str, wait_s: float) -> None:
    """Wait until a TCP connection to one of ``url``'s servers opens (nats-py itself would
    retry a dead first server forever when reconnecting is on)."""
    servers = [urlsplit(part.strip()) for part in url.split(",") if part.strip()]
    if not servers or any(not s.hostname for s in servers):
        raise LichenError(ErrorCode.INVALID_REQUEST, f"not a NATS URL: {url!r}")
    deadline = time.monotonic() + wait_s
    while True:
        for server in servers:
            try:
                async with asyncio.timeout(2.0):
                    _reader, writer = await asyncio.open_connection(
                        server.hostname, server.port or 4222
                    )
            except (OSError, TimeoutError) as exc:
                problem: Exception = exc
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        if time.monotonic() >= deadline:
            raise _unreachable(url, problem)
        await asyncio.sleep(0.2)


def _unreachable(url: str, exc: Exception) -> LichenError:
    return LichenError(
        ErrorCode.SERVICE_UNAVAILABLE,
        f"cannot reach the message bus at {redacted_url(url)}: {type(exc).__name__}: {exc}",
    )


def redacted_url(url: str) -> str:
    """``url`` without credentials, for logs and errors."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
