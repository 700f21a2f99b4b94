"""Running jobs on a node: engine events out as flow-controlled chunks.

A node takes at most its slots plus a bounded queue (:data:`QUEUE_PER_SLOT` jobs
per slot) of jobs per model; past that it refuses a job at once with NO_CAPACITY,
so the tracker fails over to another node (or answers 503) instead of letting jobs
pile up without bound. (Clients that stop reading are cut loose by the tracker's
stall timeout; per-client caps live in the gateway.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lichen.engines.base import Delta, Embedder, Engine, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.ledger.receipts import ReceiptSigner
from lichen.transport.link import LinkClosed
from lichen.wire.messages import (
    EmbedResult,
    EmbedStart,
    JobChunk,
    JobEnd,
    JobError,
    JobStart,
    Message,
)

log = logging.getLogger(__name__)

Send = Callable[[Message], Awaitable[None]]

QUEUE_PER_SLOT = 4  # jobs per slot that may wait for one (a model with 4 slots takes 20)


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
            await send(EmbedResult(job_id=msg.job_id, vectors=result.vectors, usage=result.usage))
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
            await asyncio.wait_for(self._idle.wait(), timeout)
        return self._idle.is_set()

    def _receipt(self, job: Job, finish: Finish) -> bytes:
        if self.receipts is None:
            return b""
        return self.receipts.sign(
            job_id=job.id,
            model=job.start.request.model,
            usage=finish.usage,
            finish_reason=finish.finish_reason,
            issued_ms=time.time_ns() // 1_000_000,
        )

    async def _run(self, job: Job, send: Send) -> None:
        seq = 0
        events = self.engine.generate(job.start.request)
        try:
            async for event in events:
                if isinstance(event, Delta):
                    await job.credit.acquire()
                    await send(
                        JobChunk(
                            job_id=job.id,
                            seq=seq,
                            text=event.text,
                            tokens=event.tokens,
                            tool_calls=event.tool_calls,
                            logprobs=event.logprobs,
                        )
                    )
                    seq += 1
                elif isinstance(event, Finish):
                    await send(
                        JobEnd(
                            job_id=job.id,
                            finish_reason=event.finish_reason,
                            usage=event.usage,
                            receipt=self._receipt(job, event),
                        )
                    )
                    self.stats.jobs_ok += 1
                    self.stats.tokens_in += event.usage.prompt_tokens
                    self.stats.tokens_out += event.usage.completion_tokens
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
            await events.aclose()
            self.jobs.pop(job.id, None)
            if not self.jobs and not self.embeds:
                self._idle.set()
