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
from lichen.wire.messages import (
    Error,
    GenerationRequest,
    Heartbeat,
    JobCancel,
    JobChunk,
    JobCredit,
    JobEnd,
    JobError,
    JobStart,
    ManifestBody,
    Message,
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

    def serves(self, model: str) -> bool:
        return any(m.name == model for m in self.manifest.models)


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
            return Delta(msg.text, msg.tokens)
        self._finish()
        if isinstance(msg, JobEnd):
            return Finish(msg.finish_reason, msg.usage)
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
    ) -> None:
        self.link = link
        self.peer = peer
        self.state = NodeState(manifest=manifest)
        self.jobs: dict[str, JobStream] = {}
        self._on_change = on_change
        self._handlers: dict[type[Any], Callable[[Any], Awaitable[None]]] = {
            JobChunk: self._on_job_message,
            JobEnd: self._on_job_message,
            JobError: self._on_job_message,
            Heartbeat: self._on_heartbeat,
            Error: self._on_error,
        }

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
        job_id = uuid.uuid4().hex
        stream = JobStream(self, job_id, window)
        self.jobs[job_id] = stream
        self.state.inflight += 1
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
            for stream in list(self.jobs.values()):
                stream._deliver(_LOST)
            self.jobs.clear()

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
