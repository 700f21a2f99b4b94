"""The tracker's view of one connected node: its state, its jobs, its link.

Frames from the node are dispatched by message type to small handlers. Jobs
are multiplexed by id; each job is a :class:`JobStream` the router iterates.
Flow control is credit based: the node may have at most ``window`` chunks in
flight per job, and the stream grants more only as its consumer takes them, so
a slow client cannot make the tracker (or the node) buffer without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from lichen.errors import ErrorCode, LichenError
from lichen.tracker.job_stream import JobStream
from lichen.tracker.output import NODE_CAUSED, chunk_problem, node_error, usage_problem
from lichen.tracker.relay import NodeRelay
from lichen.transport.handshake import Peer
from lichen.transport.link import Link, LinkClosed
from lichen.wire import codec
from lichen.wire.manifest import verify_manifest
from lichen.wire.messages import (
    EmbeddingRequest,
    EmbedResult,
    EmbedStart,
    Error,
    GenerationRequest,
    Heartbeat,
    JobCancel,
    JobChunk,
    JobEnd,
    JobError,
    JobStart,
    Manifest,
    ManifestBody,
    Message,
    ModelInfo,
    Telemetry,
)

__all__ = ["DEFAULT_WINDOW", "FrameBudget", "JobStream", "NodeConnection", "NodeState"]

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 64
MAX_QUEUE_DEPTH = 1024  # a heartbeat's queue_depth is clamped to this
MAX_TOKENS_PER_S = 10_000.0  # and its tokens_per_s to this
FLOOD_RATE = 50.0  # unsolicited frames per second a node may send on average...
FLOOD_BURST = 500.0  # ...and at once


@dataclass
class NodeState:
    """What the scheduler knows about a node; updated by heartbeats."""

    manifest: ManifestBody
    free_slots: int = 0
    queue_depth: int = 0
    tokens_per_s: float = 0.0
    draining: bool = False
    inflight: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    connected_at: float = field(default_factory=time.time)
    served: int = 0
    failures: int = 0
    last_job: float = 0.0  # monotonic time the tracker last started a job here
    slots: dict[str, int] = field(init=False)  # model name -> parallel slots, from the manifest

    def __post_init__(self) -> None:
        self.slots = {}
        for m in self.manifest.models:
            self.slots[m.name] = self.slots.get(m.name, 0) + max(1, m.slots)

    @property
    def model_names(self) -> list[str]:
        return list(self.slots)

    def serves(self, model: str) -> bool:
        return model in self.slots

    def set_manifest(self, manifest: ManifestBody) -> None:
        """A newer signed manifest from the same node (e.g. its model list changed)."""
        self.manifest = manifest
        self.__post_init__()

    def model_info(self, model: str) -> ModelInfo | None:
        return next((m for m in self.manifest.models if m.name == model), None)


class NodeConnection:
    """A connected, authenticated node as the tracker sees it."""

    def __init__(
        self,
        link: Link,
        peer: Peer,
        manifest: ManifestBody,
        *,
        on_change: Callable[[NodeConnection], Awaitable[None]] | None = None,
        on_manifest: Callable[[NodeConnection, ManifestBody], Awaitable[None]] | None = None,
        on_telemetry: Callable[[str, Telemetry], Awaitable[None]] | None = None,
        relay: NodeRelay | None = None,
    ) -> None:
        self.link = link
        self.relay = relay  # a cluster's: jobs other processes started, heartbeats to publish
        self.peer = peer
        self.state = NodeState(manifest=manifest)
        self.jobs: dict[str, JobStream] = {}
        self.embeds: dict[str, asyncio.Future[EmbedResult]] = {}
        self._on_manifest_change = on_manifest
        self.closed = False
        self._on_change = on_change
        self._handlers: dict[type[Any], Callable[[Any], Awaitable[None]]] = {
            JobChunk: self._on_job_message,
            JobEnd: self._on_job_message,
            JobError: self._on_job_error,
            Heartbeat: self._on_heartbeat,
            Error: self._on_error,
            Manifest: self._on_manifest,
            EmbedResult: self._on_embed_result,
            Telemetry: self._on_telemetry,
        }
        self._telemetry_sink = on_telemetry
        self._background: set[asyncio.Task[None]] = set()
        self._budget = FrameBudget()
        self._cancelled: deque[str] = deque(maxlen=1024)  # their late frames are expected

    @property
    def peer_id(self) -> str:
        return self.peer.peer_id

    @property
    def name(self) -> str:
        return self.state.manifest.name

    async def send_quietly(self, msg: Message) -> None:
        """Send, treating a closed link as normal (the reader will notice)."""
        with contextlib.suppress(LinkClosed):
            await self.link.send(msg)

    def cancel_soon(self, job_id: str, reason: str) -> None:
        """Send JobCancel without waiting (from callbacks and cancelled tasks)."""
        self._cancelled.append(job_id)
        if self.closed:
            return
        task = asyncio.get_running_loop().create_task(
            self.send_quietly(JobCancel(job_id=job_id, reason=reason))
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def start_job(
        self,
        request: GenerationRequest,
        *,
        deadline_ms: int,
        window: int = DEFAULT_WINDOW,
        stall_timeout_s: float | None = None,
    ) -> JobStream:
        """Send ``request`` to the node as a new job.

        A request the wire cannot carry (a value out of the wire's bounds, such as a
        seed of 2**64) is the client's INVALID_REQUEST, found before anything is sent;
        a closed link is NODE_FAILED. On any failure the job is released at once.
        """
        if self.closed:
            raise LichenError(ErrorCode.NODE_FAILED, "the node disconnected")
        job_id = uuid.uuid4().hex
        start = JobStart(
            job_id=job_id, request=request, deadline_ms=max(0, deadline_ms), window=window
        )
        try:
            codec.check(start)
        except LichenError as error:
            raise _request_error(error) from None
        stream = JobStream(self, job_id, window, request=request, stall_timeout_s=stall_timeout_s)
        self.jobs[job_id] = stream
        self.state.inflight += 1
        self.state.last_job = time.monotonic()
        try:
            await self.link.send(start)
        except LinkClosed as exc:
            stream._release()
            raise LichenError(ErrorCode.NODE_FAILED, "the node disconnected") from exc
        except BaseException:  # cancelled mid-send: the node may have the job; stop it
            stream._release()
            self.cancel_soon(job_id, "client")
            raise
        return stream

    async def serve(self) -> None:
        """Read frames until the link closes; then fail this node's open jobs."""
        try:
            while True:
                msg = await self.link.recv()
                self.state.last_seen = time.monotonic()
                if self.relay is not None and self.relay.claims(self, msg):
                    await self.relay.forward(self, msg)  # output of another process's job
                    continue
                handler = self._handlers.get(type(msg))
                if handler is None:
                    raise LichenError(
                        ErrorCode.PROTOCOL_ERROR, f"unexpected {type(msg).__name__} from node"
                    )
                if not self._expected(msg) and not self._budget.take():
                    raise LichenError(
                        ErrorCode.PROTOCOL_ERROR, "node sent unsolicited frames too fast"
                    )
                await handler(msg)
        except LinkClosed:
            pass
        finally:
            self.lost()

    def lost(self) -> None:
        """The node is gone (link closed, heartbeats missed, revoked): fail its open jobs."""
        self.closed = True
        for stream in list(self.jobs.values()):
            stream._fail(
                LichenError(ErrorCode.NODE_FAILED, "the serving node disconnected"), cancel=False
            )
        self.jobs.clear()
        for waiter in self.embeds.values():
            if not waiter.done():
                waiter.set_exception(
                    LichenError(ErrorCode.NODE_FAILED, "the serving node disconnected")
                )
        self.embeds.clear()

    async def embed(self, request: EmbeddingRequest, *, deadline_ms: int) -> EmbedResult:
        """Ask the node for embeddings and wait for its answer (or its failure)."""
        if self.closed:
            raise LichenError(ErrorCode.NODE_FAILED, "the node disconnected")
        job_id = uuid.uuid4().hex
        waiter: asyncio.Future[EmbedResult] = asyncio.get_running_loop().create_future()
        self.embeds[job_id] = waiter
        self.state.inflight += 1
        try:
            try:
                await self.link.send(
                    EmbedStart(job_id=job_id, request=request, deadline_ms=deadline_ms)
                )
            except LinkClosed as exc:
                raise LichenError(ErrorCode.NODE_FAILED, "the node disconnected") from exc
            return await waiter
        finally:
            self.state.inflight -= 1
            # Still ours and unanswered (a cancelled wait cancels the future too): stop it.
            if self.embeds.pop(job_id, None) is not None and (
                waiter.cancelled() or not waiter.done()
            ):
                self.cancel_soon(job_id, "client")

    async def _on_embed_result(self, msg: EmbedResult) -> None:
        waiter = self.embeds.get(msg.job_id)
        if waiter is not None and not waiter.done():
            self.state.served += 1
            waiter.set_result(msg)

    async def _on_telemetry(self, msg: Telemetry) -> None:
        """Counters from a node that opted in; the sink stores them only if the policy allows."""
        if self._telemetry_sink is not None:
            await self._telemetry_sink(self.peer_id, msg)

    def expect_late(self, job_id: str) -> None:
        """Frames of ``job_id`` may still arrive after it was cancelled: they are not a flood."""
        self._cancelled.append(job_id)

    async def _on_job_error(self, msg: JobError) -> None:
        waiter = self.embeds.get(msg.job_id)
        if waiter is None:
            await self._on_job_message(msg)
        elif not waiter.done():
            error = node_error(msg.code, msg.message)
            if error.code in NODE_CAUSED:
                self.state.failures += 1
            waiter.set_exception(error)

    async def _on_manifest(self, msg: Manifest) -> None:
        """A re-signed manifest (the node's models changed), verified like the first one."""
        body = verify_manifest(
            msg, device_key=self.peer.certificate.device_key, peer_id=self.peer_id
        )
        if self._on_manifest_change is not None:
            await self._on_manifest_change(self, body)
        else:
            self.state.set_manifest(body)
        if self.relay is not None:
            await self.relay.changed(self, msg)
        if self._on_change is not None:
            await self._on_change(self)

    def _expected(self, msg: Message) -> bool:
        """Frames the tracker asked for (job output) cost no flood budget."""
        if isinstance(msg, JobChunk | JobEnd | JobError | EmbedResult):
            job_id = msg.job_id
            return job_id in self.jobs or job_id in self.embeds or job_id in self._cancelled
        return False

    async def _on_job_message(self, msg: JobChunk | JobEnd | JobError) -> None:
        stream = self.jobs.get(msg.job_id)
        if stream is None:
            return  # a job we already cancelled
        if isinstance(msg, JobChunk) and stream.backlog > stream._window:
            raise LichenError(ErrorCode.PROTOCOL_ERROR, "node exceeded its flow-control window")
        if isinstance(msg, JobError):
            error = node_error(msg.code, msg.message)
            if error.code in NODE_CAUSED:
                self.state.failures += 1
            stream._deliver(error)
            return
        problem = (
            chunk_problem(msg, stream.received)
            if isinstance(msg, JobChunk)
            else _end_problem(msg, stream, self.state)
        )
        if problem is not None:
            log.warning("node %s sent malformed output: %s", self.peer_id, problem)
            self.state.failures += 1
            stream._fail(
                LichenError(ErrorCode.NODE_FAILED, f"the serving node sent bad output ({problem})"),
                cancel=True,
            )
            return
        if isinstance(msg, JobChunk):
            stream.received += 1
        else:
            self.state.served += 1
        stream._deliver(msg)

    async def _on_heartbeat(self, msg: Heartbeat) -> None:
        """Load as the node reports it, clamped to what its manifest says it has."""
        st = self.state
        total = sum(st.slots.values())
        st.free_slots = min(msg.free_slots, total)
        st.queue_depth = min(msg.queue_depth, MAX_QUEUE_DEPTH)
        st.tokens_per_s = min(msg.tokens_per_s, MAX_TOKENS_PER_S)
        st.draining = msg.draining
        st.last_seen = time.monotonic()
        if self.relay is not None:
            await self.relay.changed(self, msg)
        if self._on_change is not None:
            await self._on_change(self)

    async def _on_error(self, msg: Error) -> None:
        log.warning("node %s reported %s: %s", self.peer_id, msg.code, msg.message)


def _end_problem(msg: JobEnd, stream: JobStream, state: NodeState) -> str | None:
    if stream.request is None:
        return None
    return usage_problem(msg.usage, stream.request, state.model_info(stream.request.model))


def _request_error(error: LichenError) -> LichenError:
    """A request the wire refused, as the client's error (never the node's)."""
    if error.code is ErrorCode.FRAME_TOO_LARGE:
        return LichenError(ErrorCode.REQUEST_TOO_LARGE, "the request is too large to route")
    match = _PARAM.search(error.message) or _FIELD.search(error.message)
    param = match.group(1) if match is not None else None
    where = f" ({param})" if param else ""
    return LichenError(
        ErrorCode.INVALID_REQUEST, f"a request value is out of range{where}", param=param
    )


_PARAM = re.compile(r"\.params\.(\w+)")
_FIELD = re.compile(r"\.request\.(\w+)")


class FrameBudget:
    """A token bucket for frames a node sends unasked (heartbeats, manifests, telemetry,
    output for unknown jobs): a node that floods them is disconnected."""

    def __init__(self, rate: float = FLOOD_RATE, burst: float = FLOOD_BURST) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
