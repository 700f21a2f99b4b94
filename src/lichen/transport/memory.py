"""A link between two ends in one process: the same encoded frames, handed over in memory.

``lichen up`` runs its tracker and its node in one process. Both ends still run the
whole protocol (handshake, signed manifest, credits, receipts) and every message is
encoded and decoded as on a WebSocket, size cap included; only the socket, its
framing and its event-loop callbacks are gone. Each direction buffers at most
:data:`BUFFER_BYTES` of frames (at least one), so a sender whose peer stops reading
waits, as it would on a full socket.
"""

from __future__ import annotations

import asyncio
from collections import deque

from lichen.transport.link import LinkClosed
from lichen.wire import codec
from lichen.wire.messages import Message

BUFFER_BYTES = 4 * 1024 * 1024  # per direction; about what loopback socket buffers hold


class _Channel:
    """Frames one way, bounded by bytes; closing wakes every waiter on it."""

    def __init__(self, capacity: int) -> None:
        self._frames: deque[bytes] = deque()
        self._bytes = 0
        self._capacity = capacity
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed: str | None = None  # why, once closed

    async def put(self, frame: bytes) -> None:
        while self.closed is None and self._frames and self._bytes + len(frame) > self._capacity:
            self._writable.clear()
            await self._writable.wait()
        if self.closed is not None:
            raise LinkClosed(self.closed)
        self._frames.append(frame)
        self._bytes += len(frame)
        self._readable.set()

    async def get(self) -> bytes:
        """The next frame; frames sent before the close are still delivered."""
        while not self._frames:
            if self.closed is not None:
                raise LinkClosed(self.closed)
            self._readable.clear()
            await self._readable.wait()
        frame = self._frames.popleft()
        self._bytes -= len(frame)
        self._writable.set()
        return frame

    def close(self, why: str) -> None:
        if self.closed is None:
            self.closed = why
        self._readable.set()
        self._writable.set()


class MemoryLink:
    """One end of an in-process link (see :func:`memory_link_pair`)."""

    def __init__(self, inbox: _Channel, outbox: _Channel, *, remote: str, max_frame: int) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._remote = remote
        self._max = max_frame
        self._closed = False

    @property
    def remote(self) -> str:
        return self._remote

    async def send(self, msg: Message) -> None:
        if self._closed:
            raise LinkClosed("link closed")
        await self._outbox.put(codec.encode(msg, max_bytes=self._max))

    async def recv(self) -> Message:
        if self._closed:
            raise LinkClosed("link closed")
        frame = await self._inbox.get()
        return codec.decode(frame, max_bytes=self._max)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        why = f"closed by the peer ({code}{': ' + reason if reason else ''})"
        self._outbox.close(why)  # the peer reads what we sent, then this
        self._inbox.close(why)  # and may send no more


def memory_link_pair(
    *,
    max_frame: int = codec.MAX_FRAME_BYTES,
    buffer_bytes: int = BUFFER_BYTES,
    remote: str = "in-process",
) -> tuple[MemoryLink, MemoryLink]:
    """Two connected ends: what one sends, the other receives."""
    a_to_b, b_to_a = _Channel(buffer_bytes), _Channel(buffer_bytes)
    return (
        MemoryLink(b_to_a, a_to_b, remote=remote, max_frame=max_frame),
        MemoryLink(a_to_b, b_to_a, remote=remote, max_frame=max_frame),
    )
