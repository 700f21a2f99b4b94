"""A gateway's live directory of every tracker's nodes.

Each node a tracker announces becomes a :class:`NodeConnection` over a
:class:`RelayLink` in this gateway's :class:`Registry`: the scheduler, router, web UI
and settlement use it exactly as they use a tracker's own links. The gateway checks
what it can itself: the device certificate's signature, that the peer id is the
certificate's key, and the manifest's signature (so it settles receipts against the
node's own key, whatever the tracker says).

Entries expire with their tracker: a tracker not heard from (beats or anything else)
for :data:`MISSED_BEATS` beats takes its nodes with it, and their open jobs fail over
(the router resumes them on another node). A tracker whose beat counts a different
number of nodes than this gateway knows of is asked to announce them again, to this
gateway only, and not again before a backoff (doubling up to :data:`MAX_SYNC_BACKOFF_S`)
has passed, so a gateway that cannot catch up does not make trackers re-announce
without end. An announcement this gateway already holds, byte for byte, costs a
dictionary lookup: its signatures are checked once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

from lichen.clock import now_ms
from lichen.cluster.bus import Bus
from lichen.cluster.messages import (
    BusMessage,
    FromNode,
    GatewayBeat,
    NodeDown,
    NodeFrame,
    NodeUp,
    Subjects,
    Sync,
    TrackerBeat,
)
from lichen.cluster.relay_link import RelayLink
from lichen.errors import ErrorCode, LichenError
from lichen.identity.certs import verify_device_certificate
from lichen.identity.signing import peer_id as peer_id_of
from lichen.periodic import Periodic
from lichen.tasks import cancel_and_wait
from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry
from lichen.transport.handshake import Peer
from lichen.wire import codec
from lichen.wire.manifest import verify_manifest
from lichen.wire.messages import Heartbeat, Manifest

log = logging.getLogger(__name__)

MISSED_BEATS = 3
MAX_SYNC_BACKOFF_S = 30.0


@dataclass
class _Tracker:
    last_heard: float  # monotonic time of its last message of any kind
    every_s: float
    nodes: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)  # announced, not admitted (bad signature)
    sync_after: float = 0.0  # monotonic time before which no new sync is asked for
    sync_backoff_s: float = 0.0

    @property
    def known(self) -> int:
        return len(self.nodes) + len(self.refused)


@dataclass
class _Entry:
    conn: NodeConnection
    link: RelayLink
    task: asyncio.Task[None]
    announced: NodeUp  # what admitted it: a byte-identical re-announcement is a no-op


class Directory:
    """Keeps ``registry`` equal to the nodes the trackers announce."""

    def __init__(
        self,
        bus: Bus,
        subjects: Subjects,
        *,
        registry: Registry | None = None,
        gateway_id: str | None = None,
        beat_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.subjects = subjects
        self.registry = registry if registry is not None else Registry()
        self.gateway_id = gateway_id or uuid.uuid4().hex[:16]
        self.beat_s = beat_s
        self._trackers: dict[str, _Tracker] = {}
        self._entries: dict[str, _Entry] = {}  # peer id -> its relayed connection
        self._beat: Periodic | None = None
        self._synced = asyncio.Event()

    @property
    def trackers(self) -> list[str]:
        return sorted(self._trackers)

    async def start(self) -> None:
        await self.bus.subscribe(self.subjects.directory, self._on_directory)
        await self.bus.subscribe(self.subjects.gateway(self.gateway_id), self._on_own)
        await self.bus.publish(self.subjects.syncs, Sync(gateway=self.gateway_id))
        self._beat = Periodic(
            "cluster-gateway-beat", self._tick, self.beat_s, log=log, failure="beat failed"
        )
        self._beat.start()

    async def stop(self) -> None:
        if self._beat is not None:
            await self._beat.stop()
        for peer_id in list(self._entries):
            await self._drop(peer_id)

    async def _tick(self) -> None:
        await self.bus.publish(
            self.subjects.gateway_beats, GatewayBeat(gateway=self.gateway_id, every_s=self.beat_s)
        )
        now = time.monotonic()
        for tracker_id, tracker in list(self._trackers.items()):
            if now - tracker.last_heard > MISSED_BEATS * tracker.every_s + 0.5:
                log.warning("tracker %s stopped beating; dropping its nodes", tracker_id)
                del self._trackers[tracker_id]
                for peer_id in list(tracker.nodes):
                    await self._drop(peer_id)

    async def _on_directory(self, msg: BusMessage) -> None:
        if isinstance(msg, NodeUp):
            await self._up(msg)
        elif isinstance(msg, NodeFrame):
            self._heard(msg.tracker)
            self._feed(msg.tracker, msg.peer_id, msg.frame, allowed=(Heartbeat, Manifest))
        elif isinstance(msg, NodeDown):
            self._heard(msg.tracker).refused.discard(msg.peer_id)
            entry = self._entries.get(msg.peer_id)
            if entry is not None and entry.link.tracker == msg.tracker:
                await self._drop(msg.peer_id)
        elif isinstance(msg, TrackerBeat):
            await self._tracker_beat(msg)

    async def _on_own(self, msg: BusMessage) -> None:
        """This gateway's subject: its jobs' frames, and the answers to its syncs."""
        if isinstance(msg, FromNode):
            self._feed(msg.tracker, msg.peer_id, msg.frame, allowed=None)
        elif isinstance(msg, NodeUp):
            await self._up(msg)

    def _heard(self, tracker_id: str) -> _Tracker:
        """Any message from a tracker shows it alive (its beats may queue behind a burst)."""
        now = time.monotonic()
        tracker = self._trackers.get(tracker_id)
        if tracker is None:
            tracker = self._trackers[tracker_id] = _Tracker(now, self.beat_s)
        tracker.last_heard = now
        return tracker

    async def _tracker_beat(self, msg: TrackerBeat) -> None:
        tracker = self._heard(msg.tracker)
        tracker.every_s = msg.every_s
        if msg.nodes == tracker.known:
            tracker.sync_backoff_s = 0.0
            return
        now = time.monotonic()
        if now < tracker.sync_after:
            return  # asked already: give the answer time to arrive
        # Missed an announcement (e.g. started late): ask again, less often each time.
        tracker.sync_backoff_s = min(
            MAX_SYNC_BACKOFF_S, max(2 * tracker.sync_backoff_s, 2 * msg.every_s)
        )
        tracker.sync_after = now + tracker.sync_backoff_s
        await self.bus.publish(
            self.subjects.syncs, Sync(gateway=self.gateway_id, tracker=msg.tracker)
        )

    async def _up(self, msg: NodeUp) -> None:
        tracker = self._heard(msg.tracker)
        current = self._entries.get(msg.peer_id)
        if current is not None and current.announced == msg:
            return  # already held, checked when it first came
        try:
            peer, manifest = _checked(msg)
            body = verify_manifest(
                manifest, device_key=peer.certificate.device_key, peer_id=peer.peer_id
            )
        except LichenError as error:
            if len(tracker.refused) < 100_000:
                tracker.refused.add(msg.peer_id)  # counted, so its beat count still agrees
            log.warning("ignored node %s from tracker %s: %s", msg.peer_id, msg.tracker, error)
            return
        tracker.refused.discard(msg.peer_id)
        if current is not None and current.link.tracker == msg.tracker:
            current.link.feed(manifest)  # re-announced with a newer manifest
            current.announced = msg
            return
        if current is not None:  # the node moved to another tracker
            await self._drop(msg.peer_id)
        link = RelayLink(
            self.bus,
            self.subjects.tracker(msg.tracker),
            gateway=self.gateway_id,
            peer_id=msg.peer_id,
            tracker=msg.tracker,
        )
        conn = NodeConnection(link, peer, body)
        self.registry.add(conn)
        task = asyncio.create_task(self._serve(conn), name=f"relayed-node-{msg.peer_id[:8]}")
        self._entries[msg.peer_id] = _Entry(conn, link, task, msg)
        tracker.nodes.add(msg.peer_id)

    async def _serve(self, conn: NodeConnection) -> None:
        try:
            await conn.serve()
        except LichenError as error:  # the node broke the protocol on one of our jobs
            log.warning("dropping relayed node %s: %s", conn.peer_id, error.message)
        finally:
            self.registry.remove(conn)
            entry = self._entries.get(conn.peer_id)
            if entry is not None and entry.conn is conn:
                del self._entries[conn.peer_id]
                tracker = self._trackers.get(entry.link.tracker)
                if tracker is not None:
                    tracker.nodes.discard(conn.peer_id)

    def _feed(
        self,
        tracker: str,
        peer_id: str,
        frame: bytes,
        *,
        allowed: tuple[type, ...] | None,
    ) -> None:
        entry = self._entries.get(peer_id)
        if entry is None or entry.link.tracker != tracker:
            return  # a node we do not hold (yet), or a stale tracker's
        try:
            msg = codec.decode(frame)
        except LichenError as error:
            log.warning("dropped a frame of node %s: %s", peer_id, error.message)
            return
        if allowed is not None and not isinstance(msg, allowed):
            return
        entry.link.feed(msg)

    async def _drop(self, peer_id: str) -> None:
        entry = self._entries.pop(peer_id, None)
        if entry is None:
            return
        tracker = self._trackers.get(entry.link.tracker)
        if tracker is not None:
            tracker.nodes.discard(peer_id)
        self.registry.remove(entry.conn)
        entry.conn.lost()  # its jobs fail over now
        await entry.link.close()
        await cancel_and_wait(entry.task)


def _checked(msg: NodeUp) -> tuple[Peer, Manifest]:
    """The announced node's certificate and manifest, checked as far as a gateway can."""
    cert = verify_device_certificate(msg.certificate, now_ms=now_ms())
    if peer_id_of(cert.device_key) != msg.peer_id:
        raise LichenError(ErrorCode.PROTOCOL_ERROR, "the peer id is not the certificate's key")
    manifest = codec.decode(msg.manifest)
    if not isinstance(manifest, Manifest):
        raise LichenError(ErrorCode.PROTOCOL_ERROR, "the announced manifest is not a manifest")
    return Peer(peer_id=msg.peer_id, certificate=cert, trust=msg.trust), manifest
