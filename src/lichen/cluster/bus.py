"""One NATS connection with typed publish and subscribe.

A malformed message on a subscription is dropped and logged (rate-limited): the bus
is the operator's own infrastructure, but a bug in one process must not stop the
others' handlers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import nats
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
        self._last_complaint = 0.0

    @classmethod
    async def connect(cls, url: str, *, name: str) -> Bus:
        """Connect (retrying while the server comes up); a typed error if it never does."""
        try:
            client = await nats.connect(
                url,
                name=name,
                connect_timeout=2,
                max_reconnect_attempts=-1,  # a NATS restart must not end the process's role
                reconnect_time_wait=1,
                allow_reconnect=True,
            )
        except Exception as exc:  # nats raises several unrelated types for "unreachable"
            raise LichenError(
                ErrorCode.SERVICE_UNAVAILABLE, f"cannot reach the message bus at {url}: {exc}"
            ) from exc
        return cls(client)

    @property
    def connected(self) -> bool:
        return bool(self.client.is_connected)

    async def publish(self, subject: str, msg: BusMessage) -> None:
        await self.client.publish(subject, encode(msg))

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
        for sub in self._subscriptions:
            try:
                await sub.unsubscribe()
            except Exception:  # already closed by a lost connection
                log.debug("unsubscribe failed", exc_info=True)
        self._subscriptions.clear()
        if not self.client.is_closed:
            await self.client.close()

    def _complain(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_complaint >= 10.0:
            self._last_complaint = now
            log.warning("%s", message)
