"""``lichen up``: tracker + gateway + one node in one process.

The node still talks to the tracker over the real WebSocket protocol on
loopback, so this path exercises the same code as a real deployment. This module
only wires services together; each lives in its own package.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from lichen.config import Settings
from lichen.engines.llamacpp import LlamaCppEngine, LlamaModelConfig
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.app import GatewayDeps, create_app
from lichen.gateway.completions import CompletionService
from lichen.identity.store import load_identity
from lichen.models import InstalledModel, ModelStore, Progress, pull
from lichen.node.agent import NodeAgent, NodeConfig
from lichen.routing.router import Router
from lichen.routing.scheduler import Scheduler
from lichen.server import HttpServer, install_shutdown_signals
from lichen.storage.engine import create_engine, migrate
from lichen.storage.repositories import RequestLogRepository
from lichen.tracker.admission import OwnerAdmission
from lichen.tracker.service import NODE_PATH, TrackerService

log = logging.getLogger(__name__)


def ensure_model(settings: Settings, progress: Progress | None = None) -> InstalledModel:
    """The model ``settings.model`` names, pulled first if it is a missing catalog entry."""
    store = ModelStore(settings.models_path)
    try:
        return store.resolve(settings.model, progress=progress)
    except LichenError as error:
        if error.code is not ErrorCode.MODEL_NOT_FOUND:
            raise
        log.info("model %s is not installed; pulling it", settings.model)
        return pull(settings.model, store, progress=progress)


@dataclass
class Ready:
    url: str
    model: str
    peer_id: str


async def run_up(
    settings: Settings,
    *,
    progress: Progress | None = None,
    on_ready: Callable[[Ready], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    started = time.time()
    stop = stop or install_shutdown_signals()
    identity = load_identity(settings.data_dir, node_name=settings.node_name or "")
    model = await asyncio.to_thread(ensure_model, settings, progress)
    threads, batch_threads = settings.resolved_threads()
    engine = await LlamaCppEngine.start(
        [
            LlamaModelConfig(
                name=model.name,
                path=model.path,
                sha256=model.sha256,
                parallel=settings.parallel,
                ctx_size=settings.ctx_size,
                threads=threads,
                batch_threads=batch_threads,
            )
        ]
    )
    db = create_engine(settings.database)
    http: HttpServer | None = None
    tracker: TrackerService | None = None
    agent_task: asyncio.Task[None] | None = None
    agent: NodeAgent | None = None
    try:
        await migrate(settings.database)
        requests = RequestLogRepository(db)
        tracker = TrackerService(
            network_key=identity.network_key,
            admission=OwnerAdmission(identity.account_public),
        )
        scheduler = Scheduler(tracker.registry)
        completions = CompletionService(
            router=Router(scheduler),
            scheduler=scheduler,
            max_request_bytes=settings.max_request_bytes,
            timeout_s=settings.request_timeout_s,
            record=requests.record,
        )
        app = create_app(
            GatewayDeps(registry=tracker.registry, completions=completions, started=started)
        )
        app.add_api_websocket_route(NODE_PATH, tracker.endpoint)
        await tracker.start()
        http = HttpServer(app, host=settings.host, port=settings.port)
        port = await http.start()
        agent = NodeAgent(
            identity,
            engine,
            NodeConfig(
                tracker_url=f"ws://127.0.0.1:{port}{NODE_PATH}",
                name=settings.node_name or "local",
                network_key=identity.network_public,
            ),
        )
        agent_task = asyncio.create_task(agent.run(), name="node-agent")
        if not await tracker.wait_for_nodes(1, timeout=30):
            raise LichenError(ErrorCode.INTERNAL, "the built-in node did not join its tracker")
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        if on_ready is not None:
            on_ready(Ready(url=f"http://{host}:{port}", model=model.name, peer_id=identity.peer_id))
        await stop.wait()
        log.info("shutting down: draining the node")
        await agent.drain(timeout=30)
    finally:
        if agent is not None:
            await agent.stop()
        if agent_task is not None:
            await asyncio.gather(agent_task, return_exceptions=True)
        if tracker is not None:
            await tracker.stop()
        if http is not None:
            await http.stop()
        await engine.close()
        await db.dispose()
        log.info("stopped")
