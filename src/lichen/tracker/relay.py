"""The hook through which a tracker shares its node links with other processes.

A tracker on its own has no relay. In a cluster (:mod:`lichen.cluster`) the relay
publishes each node's arrival, heartbeats, manifests and departure for the gateways,
and carries the frames of jobs those gateways started: the node's output for such a
job is forwarded, not handled here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from lichen.wire.messages import Heartbeat, Manifest, Message

if TYPE_CHECKING:
    from lichen.tracker.connection import NodeConnection


class NodeRelay(Protocol):
    def claims(self, conn: NodeConnection, msg: Message) -> bool:
        """Whether ``msg`` is output of a job another process started (then :meth:`forward`)."""
        ...

    async def forward(self, conn: NodeConnection, msg: Message) -> None:
        """Send a claimed frame on to the process that started its job."""
        ...

    async def joined(self, conn: NodeConnection, manifest: Manifest) -> None:
        """``conn`` registered, with the signed manifest it presented."""
        ...

    async def changed(self, conn: NodeConnection, msg: Heartbeat | Manifest) -> None:
        """``conn`` sent a heartbeat or a new (verified) manifest."""
        ...

    async def left(self, conn: NodeConnection) -> None:
        """``conn`` is gone (closed, silent, revoked, replaced); called at least once."""
        ...
