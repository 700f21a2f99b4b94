"""Running jobs on a node: engine events out as flow-controlled chunks.

A node takes at most its slots plus a bounded queue (:data:`QUEUE_PER_SLOT` jobs
per slot) of jobs per model; past that it refuses a job at once with NO_CAPACITY,
so the tracker fails over to another node (or answers 503) instead of letting jobs
pile up without bound. (Clients that stop reading are cut loose by the tracker's
stall timeout; per-client caps live in the gateway.)

Unread streams do not cost the node: the engine is read ahead of the client's
credit by at most :data:`PAUSE_AFTER` deltas; past that its generation is closed
(which stops llama.cpp) and the produced text kept. When the client has read it
all, generation restarts on this node with that text as ``continuation`` (the
prompt cache makes the re-prefill cheap), so the client sees one unbroken answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from lichen.clock import now_ms
from lichen.engines.base import Delta, Embedder, Engine, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.ledger.receipts import ReceiptSigner
from lichen.transport.link import LinkClosed
from lichen.wire.messages import (
    EmbedResult,
    EmbedStart,
    GenerationRequest,
    JobChunk,
    JobEnd,
    JobError,
    JobStart,
    Message,
    Usage,
)

log = logging.getLogger(__name__)

Send = Callable[[Message], Awaitable[None]]

QUEUE_PER_SLOT = 4  # jobs per slot that may wait for one (a model with 4 slots takes 20)
PAUSE_AFTER = 16  # deltas produced past an exhausted send window before generation pauses


class Job:
    """One running job; ``credit`` gates how many chunks may be unacknowledged."""

    def __init__(self, start: JobStart) -> None:
        self.id = start.job_id
        self.start = start
        self.credit = asyncio.Semaphore(start.window)
        self.task: asyncio.Task[None] | None = None


@dataclass
class RunnerStats:
    """Counters since start, for the node's metrics (numbers only, never content)."""

    jobs_ok: int = 0
    jobs_failed: int = 0
    jobs_cancelled: int = 0
    jobs_paused: int = 0  # generations paused because nobody read them (resumed later)
    tokens_in: int = 0
    tokens_out: int = 0
    embeddings: int = 0


class JobRunner:
    """Owns the node's running jobs: start, credit, cancel, drain."""

    def __init__(
        self,
        engine: Engine,
        receipts: ReceiptSigner | None = None,
        *,
        queue_limit: int | None = None,
    ) -> None:
        self.engine = engine
        self.receipts = receipts  # signs a receipt for every finished job (the ledger pays it)
        self.queue_limit = queue_limit  # waiting jobs per model; None: QUEUE_PER_SLOT a slot
        self.jobs: dict[str, Job] = {}
        self.refused = 0  # jobs refused because the model's slots and queue were full
        self._replies: set[asyncio.Task[None]] = set()
        self.embeds: dict[str, asyncio.Task[None]] = {}
        self.stats = RunnerStats()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self.jobs) + len(self.embeds)

    def start_embed(self, msg: EmbedStart, send: Send) -> None:
        self._idle.clear()
        task = asyncio.create_task(self._embed(msg, send), name=f"embed-{msg.job_id[:8]}")
        self.embeds[msg.job_id] = task
        task.add_done_callback(lambda _t: self._forget(msg.job_id))

    async def _embed(self, msg: EmbedStart, send: Send) -> None:
        try:
            if not isinstance(self.engine, Embedder):
                raise LichenError(
                    ErrorCode.INVALID_REQUEST, "this node cannot produce embeddings", param="model"
                )
            result = await self.engine.embed(msg.request)
            self.stats.embeddings += len(result.vectors)
            self.stats.tokens_in += result.usage.prompt_tokens
            receipt = self._receipt(msg.job_id, msg.request.model, result.usage, "stop")
            await send(
                EmbedResult(
                    job_id=msg.job_id, vectors=result.vectors, usage=result.usage, receipt=receipt
                )
            )
        except asyncio.CancelledError:
            pass
        except LinkClosed:
            pass
        except LichenError as error:
            self.stats.jobs_failed += 1
            with contextlib.suppress(LinkClosed, LichenError):
                await send(
                    JobError(job_id=msg.job_id, code=error.code.value, message=error.message)
                )
        finally:
            self.embeds.pop(msg.job_id, None)
            if not self.jobs and not self.embeds:
                self._idle.set()

    def capacity(self, model: str) -> int:
        """Jobs ``model`` may hold at once: its slots plus the queue."""
        slots = max(1, sum(max(1, m.slots) for m in self.engine.models() if m.name == model))
        queue = QUEUE_PER_SLOT * slots if self.queue_limit is None else self.queue_limit
        return slots + queue

    def start(self, msg: JobStart, send: Send) -> None:
        model = msg.request.model
        running = sum(1 for j in self.jobs.values() if j.start.request.model == model)
        if running >= self.capacity(model):
            self.refused += 1
            refusal = JobError(
                job_id=msg.job_id,
                code=ErrorCode.NO_CAPACITY.value,
                message="the node's slots and queue are full",
            )
            reply = asyncio.create_task(self._reply(refusal, send))
            self._replies.add(reply)
            reply.add_done_callback(self._replies.discard)
            return
        job = Job(msg)
        self.jobs[job.id] = job
        self._idle.clear()
        job.task = asyncio.create_task(self._run(job, send), name=f"job-{job.id[:8]}")
        # A job cancelled before its task ran never reaches _run's clean-up: forget it here.
        job.task.add_done_callback(lambda _t: self._forget(job.id))

    def _forget(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        self.embeds.pop(job_id, None)
        if not self.jobs and not self.embeds:
            self._idle.set()

    @staticmethod
    async def _reply(msg: Message, send: Send) -> None:
        with contextlib.suppress(LinkClosed, LichenError):
            await send(msg)

    def credit(self, job_id: str, n: int) -> None:
        job = self.jobs.get(job_id)
        if job is not None:
            for _ in range(max(0, min(n, job.start.window))):
                job.credit.release()

    def cancel(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is not None and job.task is not None:
            job.task.cancel()
        embed = self.embeds.get(job_id)
        if embed is not None:
            embed.cancel()

    def cancel_all(self) -> None:
        for job_id in [*self.jobs, *self.embeds]:
            self.cancel(job_id)

    async def wait_idle(self, timeout: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        return self._idle.is_set()

    def _receipt(self, job_id: str, model: str, usage: Usage, finish_reason: str) -> bytes:
        if self.receipts is None:
            return b""
        return self.receipts.sign(
            job_id=job_id,
            model=model,
            usage=usage,
            finish_reason=finish_reason,
            issued_ms=now_ms(),
        )

    async def _run(self, job: Job, send: Send) -> None:
        out = _Output(job, send)
        try:
            finish = await self._generate(job, out)
            await send(
                JobEnd(
                    job_id=job.id,
                    finish_reason=finish.finish_reason,
                    usage=finish.usage,
                    receipt=self._receipt(
                        job.id, job.start.request.model, finish.usage, finish.finish_reason
                    ),
                )
            )
            self.stats.jobs_ok += 1
            self.stats.tokens_in += finish.usage.prompt_tokens
            self.stats.tokens_out += finish.usage.completion_tokens
        except asyncio.CancelledError:
            self.stats.jobs_cancelled += 1  # by the tracker or by shutdown; the engine stops below
        except LinkClosed:
            pass  # the tracker is gone; it resumes the job elsewhere
        except LichenError as error:
            self.stats.jobs_failed += 1
            with contextlib.suppress(LinkClosed):
                await send(JobError(job_id=job.id, code=error.code.value, message=error.message))
        except Exception:
            self.stats.jobs_failed += 1
            log.exception("job %s failed", job.id)
            with contextlib.suppress(LinkClosed):
                await send(
                    JobError(
                        job_id=job.id, code=ErrorCode.ENGINE_ERROR.value, message="engine failure"
                    )
                )
        finally:
            self.jobs.pop(job.id, None)
            if not self.jobs and not self.embeds:
                self._idle.set()

    async def _generate(self, job: Job, out: _Output) -> Finish:
        """Run the engine for ``job``, in segments: a segment is closed (pausing the
        engine) when the client's credit is used up and :data:`PAUSE_AFTER` more deltas
        wait; once they are sent, the next segment continues after the text so far."""
        request = job.start.request
        text: list[str] = []  # produced in earlier segments and this one
        tokens = 0
        calls = False  # tool calls cannot be continued as text
        while True:
            before_text, before_tokens = "".join(text), tokens
            segment = _continued(request, before_text, before_tokens)
            finish: Finish | None = None
            paused = False
            events = self.engine.generate(segment)
            try:
                async for event in events:
                    if isinstance(event, Finish):
                        finish = event
                        break
                    out.pending.append(event)
                    text.append(event.text)
                    tokens += event.tokens
                    calls = calls or bool(event.tool_calls)
                    await out.flush(wait=False)
                    if (
                        len(out.pending) > PAUSE_AFTER
                        and job.credit.locked()
                        and not calls
                        and _pausable(request, tokens)
                    ):
                        paused = True  # nobody reads: stop the engine, keep the text
                        break
            finally:
                await events.aclose()
            if finish is None and not paused:
                raise LichenError(ErrorCode.ENGINE_ERROR, "the engine ended without a finish")
            self.stats.jobs_paused += paused
            await out.flush(wait=True)  # a paused job waits here for its reader
            if finish is not None:
                return _merged(finish, before_tokens) if before_text else finish


class _Output:
    """A job's deltas not yet sent, and its chunk sequence."""

    def __init__(self, job: Job, send: Send) -> None:
        self.job = job
        self.send = send
        self.seq = 0
        self.pending: deque[Delta] = deque()

    async def flush(self, *, wait: bool) -> None:
        """Send what the credit allows (``wait``: send everything, waiting for credit)."""
        while self.pending and (wait or not self.job.credit.locked()):
            await self.job.credit.acquire()
            delta = self.pending.popleft()
            await self.send(
                JobChunk(
                    job_id=self.job.id,
                    seq=self.seq,
                    text=delta.text,
                    tokens=delta.tokens,
                    tool_calls=delta.tool_calls,
                    logprobs=delta.logprobs,
                )
            )
            self.seq += 1


def _pausable(request: GenerationRequest, produced: int) -> bool:
    """Whether generation may stop and continue later from its text: not under a
    grammar (it would restart at the continuation) and not near ``max_tokens``."""
    p = request.params
    if p.response_format or p.tools:
        return False
    return p.max_tokens is None or p.max_tokens - produced > PAUSE_AFTER


def _continued(request: GenerationRequest, text: str, tokens: int) -> GenerationRequest:
    """The request continuing after ``text`` (``tokens`` of it already produced)."""
    if not text:
        return request
    params = request.params
    if params.max_tokens is not None:
        params = msgspec.structs.replace(params, max_tokens=params.max_tokens - tokens)
    return msgspec.structs.replace(request, continuation=request.continuation + text, params=params)


def _merged(finish: Finish, before: int) -> Finish:
    """Usage of the whole answer: the engine counted the earlier segments as prompt."""
    usage = finish.usage
    if not usage.reported:
        return finish
    prompt = max(0, usage.prompt_tokens - before)
    merged = msgspec.structs.replace(
        usage,
        prompt_tokens=prompt,
        completion_tokens=before + usage.completion_tokens,
        cached_tokens=min(prompt, usage.cached_tokens),
    )
    return Finish(finish.finish_reason, merged)
