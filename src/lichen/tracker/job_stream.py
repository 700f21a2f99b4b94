"""One job's stream on the tracker: what the router iterates while a node generates.

Split out of :mod:`lichen.tracker.connection` (which multiplexes many jobs on one
node link and feeds each its node's frames); the stream itself owns the job's
lifetime on the tracker: flow-control credit back to the node, the stall timer for
a consumer that stopped reading, and releasing the node's slot exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from lichen.engines.base import Delta, EngineEvent, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.wire.messages import GenerationRequest, JobCancel, JobChunk, JobCredit, JobEnd

if TYPE_CHECKING:
    from lichen.tracker.connection import NodeConnection

log = logging.getLogger(__name__)


class JobStream:
    """One job's events as an async iterator; ``aclose()`` cancels it on the node.

    The node's slot is released (``inflight`` drops, the job leaves ``conn.jobs``) as
    soon as the job is over for the node, whoever ends it: its JobEnd or JobError, a
    lost link, malformed output, a stalled consumer, or ``aclose()``. Events already
    queued are still delivered; a failure is raised after them.

    With ``stall_timeout_s``, a consumer that leaves delivered events unread that long
    (a client that stopped reading, blocking on back-pressure) gets the job cancelled
    on the node and the stream ends with TIMEOUT, so it cannot hold a slot forever.
    """

    def __init__(
        self,
        conn: NodeConnection,
        job_id: str,
        window: int,
        *,
        request: GenerationRequest | None = None,
        stall_timeout_s: float | None = None,
    ) -> None:
        self.conn = conn
        self.job_id = job_id
        self.request = request
        self._window = window
        self._queue: asyncio.Queue[JobChunk | JobEnd | LichenError] = asyncio.Queue()
        self._owed = 0
        # Chunks received in order (the next sequence number due): about a token each,
        # counted here rather than taken from the node's claims.
        self.received = 0
        self._released = False  # the node's side is over: slot given back
        self._ended = False  # the consumer has seen the last event
        self._pulling = False
        self._stall_s = stall_timeout_s
        self._stall: asyncio.TimerHandle | None = None
        # Every slot was taken when the job started (by the tracker's own count), so it
        # waited in the node's queue: a slow first token is then load, not a lie.
        self.queued = conn.state.inflight >= sum(conn.state.slots.values())

    @property
    def peer_id(self) -> str:
        return self.conn.peer.peer_id

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    @property
    def released(self) -> bool:
        return self._released

    def _deliver(self, msg: JobChunk | JobEnd | LichenError) -> None:
        self._queue.put_nowait(msg)
        if not isinstance(msg, JobChunk):
            self._release()
        self._arm()

    def _fail(self, error: LichenError, *, cancel: bool) -> None:
        """End the job with ``error`` (after what is queued); cancel it on the node if asked."""
        if self._released:
            return
        self._deliver(error)
        if cancel:
            self.conn.cancel_soon(self.job_id, error.code.value)

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._disarm()
            if self.conn.jobs.get(self.job_id) is self:
                del self.conn.jobs[self.job_id]
            self.conn.state.inflight -= 1

    def _arm(self) -> None:
        if self._stall_s and self._stall is None and not self._released and not self._pulling:
            self._stall = asyncio.get_running_loop().call_later(self._stall_s, self._stalled)

    def _disarm(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        log.warning("job %s: the consumer stopped reading; cancelling it", self.job_id[:8])
        self._fail(
            LichenError(ErrorCode.TIMEOUT, "the client stopped reading the answer"), cancel=True
        )

    def __aiter__(self) -> JobStream:
        return self

    async def __anext__(self) -> EngineEvent:
        if self._ended:
            raise StopAsyncIteration
        self._pulling = True
        self._disarm()
        try:
            msg = await self._queue.get()
        finally:
            self._pulling = False
        if isinstance(msg, JobChunk):
            if not self._queue.empty():
                self._arm()
            if not self._released:
                self._owed += 1
                if self._owed >= self._window // 2:
                    owed, self._owed = self._owed, 0
                    await self.conn.send_quietly(JobCredit(job_id=self.job_id, n=owed))
            return Delta(msg.text, msg.tokens, msg.tool_calls, msg.logprobs)
        self._ended = True
        if isinstance(msg, JobEnd):
            return Finish(msg.finish_reason, msg.usage, receipt=msg.receipt, job_id=self.job_id)
        raise msg

    def node_failed(self, *, first: bool) -> bool:
        """Count a failure the router observed (a node silent too long) against the node,
        unless the first token was late because the job queued behind busy slots; True if
        it counted."""
        if first and self.queued:
            return False
        self.conn.state.failures += 1
        return True

    async def aclose(self) -> None:
        self._ended = True
        if not self._released:
            self._release()
            self.conn._cancelled.append(self.job_id)
            await self.conn.send_quietly(JobCancel(job_id=self.job_id, reason="client"))
