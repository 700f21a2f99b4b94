"""The node role: load engines, join the network from an invite, serve until told to stop.

SIGTERM (or SIGINT) drains: the node tells the tracker it takes no new jobs,
lets running ones finish (up to ``drain_timeout_s``), then disconnects. A
refusal the node cannot fix by retrying (revoked, unknown, invalid invite) ends
the run with that typed error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from lichen.clock import now_ms
from lichen.config import Settings
from lichen.errors import LichenError
from lichen.identity._files import ensure_private_dir
from lichen.identity.certs import verify_device_certificate
from lichen.identity.store import Identity, load_identity
from lichen.models import ModelStore, Progress
from lichen.models.network import NetworkModels
from lichen.node.agent import NodeAgent, NodeConfig
from lichen.node.join import resolve_join
from lichen.privacy.node_side import node_privacy_options
from lichen.roles.llama_engine import install_model
from lichen.roles.node_engine import start_node_engine, start_node_metrics
from lichen.server import (
    CLOSE_MARGIN_S,
    arm_exit_deadline,
    client_tls,
    install_shutdown_signals,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeReady:
    peer_id: str
    name: str
    tracker_url: str
    models: list[str]
    other_tracker_urls: tuple[str, ...] = ()  # dialled in turn when tracker_url is down


async def run_node(
    settings: Settings,
    *,
    join: str | None,
    models: list[str],
    progress: Progress | None = None,
    on_ready: Callable[[NodeReady], None] | None = None,
    stop: asyncio.Event | None = None,
    drain_timeout_s: float | None = None,
) -> None:
    """Serve ``models`` (default: ``settings.model``) to the tracker the invite names.

    ``drain_timeout_s`` defaults to ``settings.shutdown_grace_s``; after it (plus a
    margin for closing) a node stuck in an engine call exits anyway.
    """
    owns_process = stop is None  # signals are ours, and so is exiting on time
    stop = stop or install_shutdown_signals(settings.shutdown_grace_s)
    if drain_timeout_s is None:
        drain_timeout_s = settings.shutdown_grace_s
    ensure_private_dir(settings.data_dir, fix_existing=True)  # keys, join.json, secrets
    target = resolve_join(settings.data_dir, join)
    identity = load_identity(settings.data_dir, node_name=settings.node_name or "")
    name = settings.node_name or _certified_name(identity) or socket.gethostname()
    store = ModelStore(settings.models_path)
    network = NetworkModels(  # catalog names come verified through the network (issue 14)
        store,
        identity,
        tracker_url=target.tracker_url,
        network_key=target.network_key,
        invite=target.invite,
        fallback=install_model,
        tls=client_tls(settings.tls_ca_file),
        chunk_port=settings.chunk_port,
        chunk_host=settings.host,
    )
    specs = models or ([settings.model] if settings.local_model else [])
    installed = await network.install_all(specs, progress, stop)
    if installed is None:
        return  # stopped while fetching models; the next start resumes the download
    engine = await start_node_engine(settings, installed)
    agent = NodeAgent(
        identity,
        engine,
        NodeConfig(
            tracker_url=target.tracker_url,
            other_tracker_urls=target.other_tracker_urls,
            name=name,
            invite=target.invite,
            network_key=target.network_key,
            tls=client_tls(settings.tls_ca_file),
            **node_privacy_options(settings),
        ),
    )
    metrics = await start_node_metrics(settings, agent, engine)
    task = asyncio.create_task(agent.run(), name="node-agent")
    stopper = asyncio.create_task(stop.wait(), name="node-stop")
    seeder = asyncio.create_task(network.seed(), name="model-seeder")  # peers fetch our chunks
    try:
        if on_ready is not None:
            served = [m.name for m in engine.models()]
            on_ready(
                NodeReady(
                    identity.peer_id, name, target.tracker_url, served, target.other_tracker_urls
                )
            )
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper.done() and not task.done():
            log.info("draining: %d running jobs finish, no new ones start", len(agent.runner))
            await agent.drain(timeout=drain_timeout_s)
    finally:
        if owns_process and not stop.is_set():  # refused for good: bounded like a signal
            arm_exit_deadline(settings.shutdown_grace_s + CLOSE_MARGIN_S)
        stopper.cancel()
        seeder.cancel()
        await agent.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(task, stopper, seeder, return_exceptions=True)
        if metrics is not None:
            await metrics.stop()
        await engine.close()
        log.info("node stopped")
    if agent.fatal is not None:
        raise agent.fatal


def _certified_name(identity: Identity) -> str:
    """The name this node was given before (kept in its device certificate)."""
    try:
        return verify_device_certificate(identity.device_certificate, now_ms=now_ms()).name
    except LichenError:
        return ""
