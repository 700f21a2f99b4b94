"""The probe scheduler: the tracker audits every node, at random times, within a cost budget.

Each (node, model) pair the reference can check gets probes at exponentially
distributed intervals (a Poisson process, like independent clients), so the
gaps carry no pattern a node could learn. The mean interval follows from the
budget: a probe costs about ``probe_tokens`` of the node's generation, so a node
measured at ``tokens_per_s`` gets one every ``probe_tokens / (budget *
tokens_per_s)`` seconds (never more often than ``min_interval_s``). The default
budget keeps audits at 2% of a node's capacity (the issue's target is <= 5%).

A probe runs as an ordinary job: the same ``JobStart`` a client's request
becomes, with a deadline like a client's. Quarantined nodes are still probed
(the evidence keeps accruing), but at the slowest rate.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable

from lichen.audit.auditor import Answer, Auditor
from lichen.audit.book import AuditEntry
from lichen.audit.probes import ProbeFactory
from lichen.engines.base import Delta, Finish
from lichen.errors import LichenError
from lichen.tasks import cancel_and_wait
from lichen.tracker.connection import NodeConnection
from lichen.wire.messages import GenerationRequest

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 0.02  # share of a node's capacity spent on probes
PROBE_TOKENS = 64.0  # about what a probe costs a node, in generated tokens
DEFAULT_TOKENS_PER_S = 20.0  # assumed until a node's heartbeat measures it
MIN_INTERVAL_S = 10.0
MAX_INTERVAL_S = 3600.0
TICK_S = 1.0


class ProbeScheduler:
    """Sends probes through the normal job path and hands the answers to the auditor."""

    def __init__(
        self,
        nodes: Callable[[], Iterable[NodeConnection]],
        auditor: Auditor,
        factory: ProbeFactory,
        *,
        budget: float = DEFAULT_BUDGET,
        timeout_s: float = 120.0,
        privacy_class: Callable[[], str] = lambda: "",
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        concurrency: int = 2,
    ) -> None:
        if not 0 < budget <= 1:
            raise ValueError("budget must be in (0, 1]")
        self._nodes = nodes
        self.auditor = auditor
        self.factory = factory
        self.budget = budget
        self.timeout_s = timeout_s
        self._privacy_class = privacy_class
        self._rng = rng or random.Random()
        self._clock = clock
        self._due: dict[tuple[str, str], float] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[AuditEntry | None]] = set()
        self.probes_sent = 0
        self.tokens_spent = 0  # completion tokens the probed nodes generated

    def mean_interval_s(self, conn: NodeConnection) -> float:
        speed = conn.state.tokens_per_s or DEFAULT_TOKENS_PER_S
        interval = PROBE_TOKENS / (self.budget * speed)
        if self.auditor.book.quarantined(conn.peer_id):
            return MAX_INTERVAL_S
        return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, interval))

    def _targets(self) -> list[tuple[NodeConnection, str]]:
        out: list[tuple[NodeConnection, str]] = []
        for conn in self._nodes():
            if conn.closed or conn.state.draining:
                continue
            for info in conn.state.manifest.models:
                if info.sha256 and self.auditor.scorer.serves(info.name, info.sha256):
                    out.append((conn, info.name))
        return out

    def due(self) -> list[tuple[NodeConnection, str]]:
        """Targets whose next probe time has come (new targets get a random first time)."""
        now = self._clock()
        ready: list[tuple[NodeConnection, str]] = []
        live: set[tuple[str, str]] = set()
        for conn, model in self._targets():
            key = (conn.peer_id, model)
            live.add(key)
            at = self._due.get(key)
            if at is None:
                self._due[key] = now + self._rng.expovariate(1.0 / self.mean_interval_s(conn))
            elif now >= at:
                self._due[key] = now + self._rng.expovariate(1.0 / self.mean_interval_s(conn))
                ready.append((conn, model))
        for key in set(self._due) - live:
            del self._due[key]
        return ready

    async def run(self) -> None:
        """Probe until cancelled."""
        try:
            while True:
                for conn, model in self.due():
                    task = asyncio.create_task(self.probe(conn, model), name="audit-probe")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                await asyncio.sleep(TICK_S)
        finally:
            await cancel_and_wait(*self._tasks, quiet=True)

    async def probe(self, conn: NodeConnection, model: str) -> AuditEntry | None:
        """Send one probe to ``conn`` for ``model`` and audit the answer."""
        async with self._slots:
            probe, request = self.factory.make(model, privacy_class=self._privacy_class())
            answer = await self.collect(conn, request)
            if answer is None:
                return None
            self.probes_sent += 1
            self.tokens_spent += answer.usage.completion_tokens
            return await self.auditor.audit(
                peer_id=conn.peer_id, request=request, answer=answer, probe_id=probe.id
            )

    async def collect(self, conn: NodeConnection, request: GenerationRequest) -> Answer | None:
        """Run ``request`` on ``conn`` as a normal job; None if the node failed it."""
        deadline_ms = int((time.time() + self.timeout_s) * 1000)
        text: list[str] = []
        try:
            async with asyncio.timeout(self.timeout_s):
                job = await conn.start_job(request, deadline_ms=deadline_ms)
                try:
                    async for event in job:
                        if isinstance(event, Delta):
                            text.append(event.text)
                        elif isinstance(event, Finish):
                            return Answer(
                                "".join(text), event.usage, event.finish_reason, tuple(text)
                            )
                finally:
                    await job.aclose()
        except (LichenError, TimeoutError) as error:
            code = error.code.value if isinstance(error, LichenError) else "timeout"
            log.info("probe of node %s did not finish (%s)", conn.peer_id, code)
        return None
