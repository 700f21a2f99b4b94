"""A gateway's end of one node's link, relayed through the node's tracker.

It is a :class:`~lichen.transport.link.Link`: frames the gateway sends go to the
tracker's subject addressed to the node; frames the directory receives for the node
(its heartbeats and manifests, and the output of this gateway's jobs) are fed in.
Closing it (the node or its tracker left) makes ``recv`` raise ``LinkClosed``, so the
:class:`~lichen.tracker.connection.NodeConnection` on top fails its open jobs and the
router resumes them elsewhere.
"""

from __future__ import annotations

import asyncio

from lichen.cluster.bus import Bus
from lichen.cluster.messages import ToNode
from lichen.transport.link import LinkClosed
from lichen.wire import codec
from lichen.wire.messages import Message


class _Closed:
    """Queued after the last frame: the link is closed."""


_CLOSED = _Closed()


class RelayLink:
    def __init__(self, bus: Bus, subject: str, *, gateway: str, peer_id: str, tracker: str):
        self.bus = bus
        self.subject = subject  # the tracker's
        self.gateway = gateway
        self.peer_id = peer_id
        self.tracker = tracker
        self._inbox: asyncio.Queue[Message | _Closed] = asyncio.Queue()
        self.closed = False

    @property
    def remote(self) -> str:
        return f"tracker {self.tracker}"

    def feed(self, msg: Message) -> None:
        """A frame from the node (via its tracker)."""
        if not self.closed:
            self._inbox.put_nowait(msg)

    async def send(self, msg: Message) -> None:
        if self.closed or not self.bus.connected:
            raise LinkClosed(f"relay to {self.peer_id} is closed")
        out = ToNode(gateway=self.gateway, peer_id=self.peer_id, frame=codec.encode(msg))
        if not await self.bus.publish(self.subject, out):
            raise LinkClosed(f"the message bus did not take a frame for {self.peer_id}")

    async def recv(self) -> Message:
        item = await self._inbox.get()
        if isinstance(item, _Closed):
            self._inbox.put_nowait(_CLOSED)  # every later recv fails too
            raise LinkClosed(f"relay to {self.peer_id} closed")
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self._inbox.put_nowait(_CLOSED)
