"""Running jobs on a node: engine events out as flow-controlled chunks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from lichen.engines.base import Delta, Engine, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.transport.link import LinkClosed
from lichen.wire.messages import JobChunk, JobEnd, JobError, JobStart, Message

log = logging.getLogger(__name__)

Send = Callable[[Message], Awaitable[None]]


class Job:
    """One running job; ``credit`` gates how many chunks may be unacknowledged."""

    def __init__(self, start: JobStart) -> None:
        self.id = start.job_id
        self.start = start
        self.credit = asyncio.Semaphore(start.window)
        self.task: asyncio.Task[None] | None = None


class JobRunner:
    """Owns the node's running jobs: start, credit, cancel, drain."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.jobs: dict[str, Job] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self.jobs)

    def start(self, msg: JobStart, send: Send) -> None:
        job = Job(msg)
        self.jobs[job.id] = job
        self._idle.clear()
        job.task = asyncio.create_task(self._run(job, send), name=f"job-{job.id[:8]}")

    def credit(self, job_id: str, n: int) -> None:
        job = self.jobs.get(job_id)
        if job is not None:
            for _ in range(max(0, min(n, job.start.window))):
                job.credit.release()

    def cancel(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is not None and job.task is not None:
            job.task.cancel()

    def cancel_all(self) -> None:
        for job_id in list(self.jobs):
            self.cancel(job_id)

    async def wait_idle(self, timeout: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return self._idle.is_set()

    async def _run(self, job: Job, send: Send) -> None:
        seq = 0
        events = self.engine.generate(job.start.request)
        try:
            async for event in events:
                if isinstance(event, Delta):
                    await job.credit.acquire()
                    await send(
                        JobChunk(job_id=job.id, seq=seq, text=event.text, tokens=event.tokens)
                    )
                    seq += 1
                elif isinstance(event, Finish):
                    await send(
                        JobEnd(job_id=job.id, finish_reason=event.finish_reason, usage=event.usage)
                    )
        except asyncio.CancelledError:
            pass  # cancelled by the tracker or by shutdown; the engine stops below
        except LinkClosed:
            pass  # the tracker is gone; it resumes the job elsewhere
        except LichenError as error:
            with contextlib.suppress(LinkClosed):
                await send(JobError(job_id=job.id, code=error.code.value, message=error.message))
        except Exception:
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
            if not self.jobs:
                self._idle.set()
