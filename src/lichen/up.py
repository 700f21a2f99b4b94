"""``lichen up``: tracker + gateway + one node in one process.

The node talks to its tracker with the real protocol (handshake, signed
manifest, credits, receipts, every frame encoded and decoded) over an in-process
link instead of a loopback WebSocket, which spares each token a socket round trip
through the event loop. Nodes on other machines join the same tracker over
WebSockets. This module only wires services together; each lives in its own package.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from lichen.config import Settings
from lichen.errors import ErrorCode, LichenError
from lichen.identity.store import load_identity
from lichen.models import InstalledModel, ModelStore, Progress
from lichen.node.agent import NodeAgent, NodeConfig
from lichen.node.metrics import NodeCollector
from lichen.portcheck import ensure_port_free
from lichen.privacy.node_side import node_privacy_options
from lichen.roles.llama_engine import install_model
from lichen.roles.node_engine import start_node_engine
from lichen.roles.tracker import tracker_stack
from lichen.server import install_shutdown_signals

log = logging.getLogger(__name__)


def ensure_model(settings: Settings, progress: Progress | None = None) -> InstalledModel:
    """The model ``settings.model`` names, pulled first if it is a missing catalog entry."""
    return install_model(ModelStore(settings.models_path), settings.model, progress)


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
    stop = stop or install_shutdown_signals(settings.shutdown_grace_s)
    # Before the model loads: a busy port is an error in a second, not after a minute.
    await asyncio.to_thread(ensure_port_free, settings.host, settings.port)
    model = (
        await asyncio.to_thread(ensure_model, settings, progress) if settings.local_model else None
    )
    # Keys only once the model is known: a typo in --model leaves no new identity behind.
    identity = load_identity(settings.data_dir, node_name=settings.node_name or "")
    engine = await start_node_engine(settings, [model] if model is not None else [])
    try:
        async with tracker_stack(settings, identity) as stack:
            agent = NodeAgent(
                identity,
                engine,
                NodeConfig(
                    tracker_url=stack.local_node_url,
                    name=settings.node_name or "local",
                    network_key=identity.network_public,
                    **node_privacy_options(settings),
                ),
                dial=stack.tracker.in_process_link,
            )
            stack.metrics.register(NodeCollector(agent.runner, engine))
            stack.health_checks.append(lambda: "engine_stalled" if engine.load().stalled else None)
            agent_task = asyncio.create_task(agent.run(), name="node-agent")
            try:
                if not await stack.tracker.wait_for_nodes(1, timeout=30):
                    raise LichenError(
                        ErrorCode.INTERNAL, "the built-in node did not join its tracker"
                    )
                if on_ready is not None:
                    served = model.name if model else ", ".join(m.name for m in engine.models())
                    on_ready(Ready(url=stack.url, model=served, peer_id=identity.peer_id))
                await stop.wait()
                log.info("shutting down: draining the node")
                await agent.drain(timeout=settings.shutdown_grace_s)
            finally:
                await agent.stop()
                await asyncio.gather(agent_task, return_exceptions=True)
    finally:
        await engine.close()
        log.info("stopped")
