"""A typed message link over one WebSocket, for either end of the connection.

The node dials out with the ``websockets`` client; the tracker accepts with
Starlette's WebSocket. Both are wrapped as a :class:`Link` that sends and
receives typed wire messages, so the protocol code never sees bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from lichen.errors import ErrorCode, LichenError
from lichen.wire import codec
from lichen.wire.messages import Error, Message


class LinkClosed(Exception):
    """The other side went away; a normal event, not a bug."""


class Link(Protocol):
    async def send(self, msg: Message) -> None: ...
    async def recv(self) -> Message: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    @property
    def remote(self) -> str: ...


async def send_error(link: Link, error: LichenError) -> None:
    """Tell the peer why we are closing, then close. Never raises."""
    with contextlib.suppress(LinkClosed, LichenError):
        await link.send(Error(code=error.code.value, message=error.message))
    await link.close(4000 + min(error.code.http_status, 999) % 1000, error.code.value)


class ClientLink:
    """The node's end: a ``websockets`` client connection."""

    def __init__(self, conn: ClientConnection, *, max_frame: int = codec.MAX_FRAME_BYTES) -> None:
        self._conn = conn
        self._max = max_frame
        self._send_lock = asyncio.Lock()

    @property
    def remote(self) -> str:
        addr = self._conn.remote_address
        return f"{addr[0]}:{addr[1]}" if addr else "?"

    async def send(self, msg: Message) -> None:
        frame = codec.encode(msg, max_bytes=self._max)
        try:
            await self._conn.send(frame)
        except ConnectionClosed as exc:
            raise LinkClosed(str(exc)) from exc

    async def recv(self) -> Message:
        try:
            frame = await self._conn.recv()
        except ConnectionClosed as exc:
            raise LinkClosed(str(exc)) from exc
        if isinstance(frame, str):
            raise LichenError(ErrorCode.PROTOCOL_ERROR, "text frames are not part of the protocol")
        return codec.decode(frame, max_bytes=self._max)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._conn.close(code, reason)


class ServerLink:
    """The tracker's end: a Starlette WebSocket accepted by the app."""

    def __init__(self, ws: WebSocket, *, max_frame: int = codec.MAX_FRAME_BYTES) -> None:
        self._ws = ws
        self._max = max_frame
        self._closed = False

    @property
    def remote(self) -> str:
        client = self._ws.client
        return f"{client.host}:{client.port}" if client else "?"

    async def send(self, msg: Message) -> None:
        if self._closed:
            raise LinkClosed("link closed")
        frame = codec.encode(msg, max_bytes=self._max)
        try:
            await self._ws.send_bytes(frame)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            self._closed = True
            raise LinkClosed(str(exc)) from exc

    async def recv(self) -> Message:
        try:
            message = await self._ws.receive()
        except (RuntimeError, OSError) as exc:
            self._closed = True
            raise LinkClosed(str(exc)) from exc
        if message["type"] == "websocket.disconnect":
            self._closed = True
            raise LinkClosed(f"disconnected ({message.get('code')})")
        frame = message.get("bytes")
        if frame is None:
            raise LichenError(ErrorCode.PROTOCOL_ERROR, "text frames are not part of the protocol")
        return codec.decode(frame, max_bytes=self._max)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RuntimeError, OSError):
            await self._ws.close(code, reason)
