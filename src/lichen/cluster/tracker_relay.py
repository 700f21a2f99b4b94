"""A tracker's side of the cluster: publish its nodes, relay the gateways' jobs.

For every node link it holds, the tracker publishes a :class:`NodeUp` (the node's
certificate and signed manifest), then each heartbeat and new manifest, then a
:class:`NodeDown`. A beat every ``beat_s`` says the tracker is alive and how many
nodes it has; a gateway whose count disagrees asks for a :class:`Sync`.

A gateway starts a job by sending the node's ``JobStart`` to this tracker's subject;
the tracker remembers which gateway owns the job, hands the frame to the node, and
forwards the node's chunks, end or error to that gateway. Credit and cancel frames
travel the same way, so flow control is end to end between gateway and node. A
gateway that stops beating has its jobs cancelled on the nodes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from dataclasses import dataclass

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
    ToNode,
    TrackerBeat,
)
from lichen.errors import ErrorCode, LichenError
from lichen.identity.certs import certificate_bytes
from lichen.periodic import Periodic
from lichen.tasks import cancel_and_wait
from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry
from lichen.transport.link import LinkClosed
from lichen.wire import codec
from lichen.wire.messages import (
    EmbedResult,
    EmbedStart,
    Heartbeat,
    JobCancel,
    JobChunk,
    JobCredit,
    JobEnd,
    JobError,
    JobStart,
    Manifest,
    Message,
)

log = logging.getLogger(__name__)

MAX_REMOTE_JOBS = 100_000  # open relayed jobs on one tracker, all gateways together
MISSED_BEATS = 3  # a gateway silent this many beats is gone
SYNC_BATCH = 256  # announcements between yields to the event loop while answering a sync


@dataclass
class _Job:
    gateway: str
    peer_id: str


class TrackerRelay:
    """Implements :class:`lichen.tracker.relay.NodeRelay` over a :class:`Bus`."""

    def __init__(
        self,
        bus: Bus,
        subjects: Subjects,
        registry: Registry,
        *,
        tracker_id: str | None = None,
        beat_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.subjects = subjects
        self.registry = registry
        self.tracker_id = tracker_id or uuid.uuid4().hex[:16]
        self.beat_s = beat_s
        self._manifests: dict[str, Manifest] = {}  # peer id -> its latest signed manifest
        self._jobs: dict[str, _Job] = {}  # relayed job id -> owner
        # gateway id -> (monotonic time of its last beat, its beat interval)
        self._gateways: dict[str, tuple[float, float]] = {}
        self._beat: Periodic | None = None
        self._syncing: dict[str, asyncio.Task[None]] = {}  # gateway id -> its re-announcement

    @property
    def open_jobs(self) -> int:
        return len(self._jobs)

    async def start(self) -> None:
        await self.bus.subscribe(self.subjects.tracker(self.tracker_id), self._on_to_node)
        await self.bus.subscribe(self.subjects.gateway_beats, self._on_gateway_beat)
        await self.bus.subscribe(self.subjects.syncs, self._on_sync)
        self._beat = Periodic(
            "cluster-tracker-beat",
            self._tick,
            self.beat_s,
            log=log,
            failure="cluster beat failed",
        )
        self._beat.start()

    async def stop(self) -> None:
        if self._beat is not None:
            await self._beat.stop()
        await cancel_and_wait(*self._syncing.values())
        for peer_id in list(self._manifests):
            await self._publish(NodeDown(tracker=self.tracker_id, peer_id=peer_id))
        self._manifests.clear()

    # -- NodeRelay ---------------------------------------------------------------------

    def claims(self, conn: NodeConnection, msg: Message) -> bool:
        if isinstance(msg, JobChunk | JobEnd | JobError | EmbedResult):
            job = self._jobs.get(msg.job_id)
            return job is not None and job.peer_id == conn.peer_id
        return False

    async def forward(self, conn: NodeConnection, msg: Message) -> None:
        assert isinstance(msg, JobChunk | JobEnd | JobError | EmbedResult)
        job = self._jobs[msg.job_id]
        if not isinstance(msg, JobChunk):
            del self._jobs[msg.job_id]  # the job is over for the node
        await self._to_gateway(job.gateway, conn.peer_id, msg)

    async def joined(self, conn: NodeConnection, manifest: Manifest) -> None:
        self._manifests[conn.peer_id] = manifest
        await self._announce(conn, manifest)

    async def changed(self, conn: NodeConnection, msg: Heartbeat | Manifest) -> None:
        if isinstance(msg, Manifest):
            self._manifests[conn.peer_id] = msg
        frame = NodeFrame(tracker=self.tracker_id, peer_id=conn.peer_id, frame=codec.encode(msg))
        await self._publish(frame)

    async def left(self, conn: NodeConnection) -> None:
        if self._manifests.pop(conn.peer_id, None) is None:
            return
        for job_id in [j for j, job in self._jobs.items() if job.peer_id == conn.peer_id]:
            del self._jobs[job_id]  # the gateways fail these jobs when they see the node go
        await self._publish(NodeDown(tracker=self.tracker_id, peer_id=conn.peer_id))

    # -- the bus -----------------------------------------------------------------------

    async def _on_to_node(self, msg: BusMessage) -> None:
        if not isinstance(msg, ToNode):
            return
        try:
            frame = codec.decode(msg.frame)
        except LichenError as error:
            log.warning("dropped a frame from gateway %s: %s", msg.gateway, error.message)
            return
        conn = self.registry.get(msg.peer_id)
        if isinstance(frame, JobStart | EmbedStart):
            await self._start(msg.gateway, msg.peer_id, conn, frame)
        elif isinstance(frame, JobCredit | JobCancel):
            job = self._jobs.get(frame.job_id)
            if job is None or job.gateway != msg.gateway or conn is None:
                return  # over already (its end crossed this frame), or not this gateway's
            if isinstance(frame, JobCancel):
                del self._jobs[frame.job_id]
                conn.expect_late(frame.job_id)
            await conn.send_quietly(frame)
        else:
            log.warning("dropped a %s from gateway %s", type(frame).__name__, msg.gateway)

    async def _start(
        self,
        gateway: str,
        peer_id: str,
        conn: NodeConnection | None,
        frame: JobStart | EmbedStart,
    ) -> None:
        if conn is None or conn.closed:
            problem = LichenError(ErrorCode.NODE_FAILED, "the node is not connected")
        elif frame.job_id in self._jobs or frame.job_id in conn.jobs:
            problem = LichenError(ErrorCode.PROTOCOL_ERROR, "job id already in use")
        elif len(self._jobs) >= MAX_REMOTE_JOBS:
            problem = LichenError(ErrorCode.NO_CAPACITY, "the tracker relays too many jobs")
        else:
            self._jobs[frame.job_id] = _Job(gateway, peer_id)
            self._gateways.setdefault(gateway, (time.monotonic(), self.beat_s))
            try:
                await conn.link.send(frame)
                return
            except LinkClosed:
                self._jobs.pop(frame.job_id, None)
                problem = LichenError(ErrorCode.NODE_FAILED, "the node disconnected")
        failed = JobError(job_id=frame.job_id, code=problem.code.value, message=problem.message)
        await self._to_gateway(gateway, peer_id, failed)

    async def _on_gateway_beat(self, msg: BusMessage) -> None:
        if isinstance(msg, GatewayBeat):
            self._gateways[msg.gateway] = (time.monotonic(), msg.every_s)

    async def _on_sync(self, msg: BusMessage) -> None:
        """Announce every node to the asking gateway, once at a time per gateway (a sync
        asked for while one is under way is already being answered)."""
        if not isinstance(msg, Sync) or msg.tracker not in ("", self.tracker_id):
            return
        if msg.gateway in self._syncing:
            return
        task = asyncio.create_task(self._resync(msg.gateway), name="cluster-sync")
        self._syncing[msg.gateway] = task
        task.add_done_callback(functools.partial(self._synced, msg.gateway))

    def _synced(self, gateway: str, _task: asyncio.Task[None]) -> None:
        self._syncing.pop(gateway, None)

    async def _resync(self, gateway: str) -> None:
        subject = self.subjects.gateway(gateway)
        for i, (peer_id, manifest) in enumerate(list(self._manifests.items())):
            conn = self.registry.get(peer_id)
            if conn is not None:
                await self.bus.publish(subject, self._node_up(conn, manifest))
            if i % SYNC_BATCH == SYNC_BATCH - 1:
                await asyncio.sleep(0)  # let beats and jobs through

    async def _tick(self) -> None:
        beat = TrackerBeat(tracker=self.tracker_id, nodes=len(self._manifests), every_s=self.beat_s)
        await self._publish(beat)
        await self._cancel_orphans()

    async def _cancel_orphans(self) -> None:
        """Cancel on the nodes the jobs of gateways that stopped beating."""
        now = time.monotonic()
        gone = {
            gateway
            for gateway, (seen, every_s) in self._gateways.items()
            if now - seen > MISSED_BEATS * every_s + 0.5
        }
        if not gone:
            return
        for job_id, job in list(self._jobs.items()):
            if job.gateway not in gone:
                continue
            del self._jobs[job_id]
            conn = self.registry.get(job.peer_id)
            if conn is not None:
                conn.expect_late(job_id)
                await conn.send_quietly(JobCancel(job_id=job_id, reason="gateway gone"))
        for gateway in gone:
            log.warning("gateway %s stopped beating; its jobs were cancelled", gateway)
            self._gateways.pop(gateway, None)

    async def _announce(self, conn: NodeConnection, manifest: Manifest) -> None:
        await self._publish(self._node_up(conn, manifest))

    def _node_up(self, conn: NodeConnection, manifest: Manifest) -> NodeUp:
        return NodeUp(
            tracker=self.tracker_id,
            peer_id=conn.peer_id,
            certificate=certificate_bytes(conn.peer.certificate),
            trust=conn.peer.trust,
            manifest=codec.encode(manifest),
        )

    async def _to_gateway(self, gateway: str, peer_id: str, msg: Message) -> None:
        out = FromNode(tracker=self.tracker_id, peer_id=peer_id, frame=codec.encode(msg))
        await self.bus.publish(self.subjects.gateway(gateway), out)

    async def _publish(self, msg: BusMessage) -> None:
        await self.bus.publish(self.subjects.directory, msg)
