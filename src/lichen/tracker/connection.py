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
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from lichen.engines.base import Delta, EngineEvent, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.transport.handshake import Peer
from lichen.transport.link import Link, LinkClosed
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
    JobCredit,
    JobEnd,
    JobError,
    JobStart,
    Manifest,
    ManifestBody,
    Message,
    ModelInfo,
    Telemetry,
)

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 64


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


class _Lost:
    """Queue sentinel: the node went away mid-job."""


_LOST = _Lost()


class JobStream:
    """One job's events as an async iterator; ``aclose()`` cancels it on the node."""

    def __init__(self, conn: NodeConnection, job_id: str, window: int) -> None:
        self.conn = conn
        self.job_id = job_id
        self._window = window
        self._queue: asyncio.Queue[JobChunk | JobEnd | JobError | _Lost] = asyncio.Queue()
        self._owed = 0
        self._done = False

    @property
    def peer_id(self) -> str:
        return self.conn.peer.peer_id

    def _deliver(self, msg: JobChunk | JobEnd | JobError | _Lost) -> None:
        self._queue.put_nowait(msg)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def __aiter__(self) -> JobStream:
        return self

    async def __anext__(self) -> EngineEvent:
        if self._done:
            raise StopAsyncIteration
        msg = await self._queue.get()
        if isinstance(msg, JobChunk):
            self._owed += 1
            if self._owed >= self._window // 2:
                owed, self._owed = self._owed, 0
                await self.conn.send_quietly(JobCredit(job_id=self.job_id, n=owed))
            return Delta(msg.text, msg.tokens, msg.tool_calls)
        self._finish()
        if isinstance(msg, JobEnd):
            return Finish(msg.finish_reason, msg.usage, receipt=msg.receipt, job_id=self.job_id)
        if isinstance(msg, JobError):
            raise LichenError(_error_code(msg.code), msg.message)
        raise LichenError(ErrorCode.NODE_FAILED, "the serving node disconnected")

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self.conn.jobs.pop(self.job_id, None)
            self.conn.state.inflight -= 1

    async def aclose(self) -> None:
        if not self._done:
            self._finish()
            await self.conn.send_quietly(JobCancel(job_id=self.job_id, reason="client"))


def _error_code(value: str) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.ENGINE_ERROR


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
    ) -> None:
        self.link = link
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

    async def start_job(
        self, request: GenerationRequest, *, deadline_ms: int, window: int = DEFAULT_WINDOW
    ) -> JobStream:
        if self.closed:
            raise LichenError(ErrorCode.NODE_FAILED, "the node disconnected")
        job_id = uuid.uuid4().hex
        stream = JobStream(self, job_id, window)
        self.jobs[job_id] = stream
        self.state.inflight += 1
        self.state.last_job = time.monotonic()
        try:
            await self.link.send(
                JobStart(job_id=job_id, request=request, deadline_ms=deadline_ms, window=window)
            )
        except LinkClosed as exc:
            stream._finish()
            raise LichenError(ErrorCode.NODE_FAILED, "the node disconnected") from exc
        return stream

    async def serve(self) -> None:
        """Read frames until the link closes; then fail this node's open jobs."""
        try:
            while True:
                msg = await self.link.recv()
                self.state.last_seen = time.monotonic()
                handler = self._handlers.get(type(msg))
                if handler is None:
                    raise LichenError(
                        ErrorCode.PROTOCOL_ERROR, f"unexpected {type(msg).__name__} from node"
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
            stream._deliver(_LOST)
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
            if self.embeds.pop(job_id, None) is not None and not waiter.done():
                await self.send_quietly(JobCancel(job_id=job_id, reason="client"))

    async def _on_embed_result(self, msg: EmbedResult) -> None:
        waiter = self.embeds.get(msg.job_id)
        if waiter is not None and not waiter.done():
            self.state.served += 1
            waiter.set_result(msg)

    async def _on_telemetry(self, msg: Telemetry) -> None:
        """Counters from a node that opted in; the sink stores them only if the policy allows."""
        if self._telemetry_sink is not None:
            await self._telemetry_sink(self.peer_id, msg)

    async def _on_job_error(self, msg: JobError) -> None:
        waiter = self.embeds.get(msg.job_id)
        if waiter is None:
            await self._on_job_message(msg)
        elif not waiter.done():
            self.state.failures += 1
            waiter.set_exception(LichenError(_error_code(msg.code), msg.message))

    async def _on_manifest(self, msg: Manifest) -> None:
        """A re-signed manifest (the node's models changed), verified like the first one."""
        body = verify_manifest(
            msg, device_key=self.peer.certificate.device_key, peer_id=self.peer_id
        )
        if self._on_manifest_change is not None:
            await self._on_manifest_change(self, body)
        else:
            self.state.set_manifest(body)
        if self._on_change is not None:
            await self._on_change(self)

    async def _on_job_message(self, msg: JobChunk | JobEnd | JobError) -> None:
        stream = self.jobs.get(msg.job_id)
        if stream is None:
            return  # a job we already cancelled
        if isinstance(msg, JobChunk) and stream.backlog > stream._window:
            raise LichenError(ErrorCode.PROTOCOL_ERROR, "node exceeded its flow-control window")
        if isinstance(msg, JobEnd):
            self.state.served += 1
        elif isinstance(msg, JobError):
            self.state.failures += 1
        stream._deliver(msg)

    async def _on_heartbeat(self, msg: Heartbeat) -> None:
        st = self.state
        st.free_slots, st.queue_depth = msg.free_slots, msg.queue_depth
        st.tokens_per_s, st.draining = msg.tokens_per_s, msg.draining
        st.last_seen = time.monotonic()
        if self._on_change is not None:
            await self._on_change(self)

    async def _on_error(self, msg: Error) -> None:
        log.warning("node %s reported %s: %s", self.peer_id, msg.code, msg.message)
