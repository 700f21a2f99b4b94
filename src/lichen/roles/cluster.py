"""The cluster roles: a gateway process on the bus, and a tracker's side of the bus.

``lichen gateway`` runs :func:`gateway_stack`: the HTTP API, accounts, quotas, the
privacy pipeline and the web UI over the network's shared database, scheduling from
the :class:`~lichen.cluster.directory.Directory` of every tracker's nodes. It holds
no node links, so any number of them can run behind a load balancer.

A tracker joins the bus through :func:`tracker_relay` when ``nats_url`` is set
(``lichen tracker`` does this itself).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.cluster.bus import Bus, redacted_url
from lichen.cluster.directory import Directory
from lichen.cluster.messages import Subjects
from lichen.cluster.tracker_relay import TrackerRelay
from lichen.config import Settings
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.admin import mount_admin
from lichen.gateway.services import GatewayServices
from lichen.identity._files import ensure_private_dir
from lichen.identity.store import Identity
from lichen.roles.gateway import Gateway, GatewayOptions, build_gateway
from lichen.roles.shared import start_shared
from lichen.roles.web import build_web
from lichen.server import HttpOptions, HttpServer, dial_host
from lichen.storage.membership import MembershipRepository
from lichen.storage.repositories import RequestLogRepository
from lichen.tracker.registry import Registry

log = logging.getLogger(__name__)


async def connect_bus(exits: contextlib.AsyncExitStack, settings: Settings, role: str) -> Bus:
    """The bus at ``settings.nats_url``, closed by ``exits``."""
    if not settings.nats_url:
        raise LichenError(
            ErrorCode.INVALID_REQUEST,
            f"a cluster {role} needs the message bus: set LICHEN_NATS_URL (e.g. "
            "nats://127.0.0.1:4222); see docs/deployment.md",
        )
    bus = await Bus.connect(settings.nats_url, name=f"lichen-{role}-{os.getpid()}")
    exits.push_async_callback(bus.close)
    return bus


async def tracker_relay(
    exits: contextlib.AsyncExitStack, settings: Settings, identity: Identity, registry: Registry
) -> TrackerRelay:
    """A started relay publishing ``registry``'s nodes on the bus; ``exits`` stops it."""
    bus = await connect_bus(exits, settings, "tracker")
    relay = TrackerRelay(
        bus,
        Subjects.for_network(identity.network_public),
        registry,
        beat_s=settings.cluster_beat_s,
    )
    await relay.start()
    exits.push_async_callback(relay.stop)
    return relay


@dataclass
class GatewayStack:
    """A running gateway process."""

    settings: Settings
    db: AsyncEngine
    directory: Directory
    gateway: Gateway
    accounting: GatewayServices
    app: FastAPI
    port: int
    url: str


@contextlib.asynccontextmanager
async def gateway_stack(settings: Settings, identity: Identity) -> AsyncIterator[GatewayStack]:
    """Build and run a gateway on the bus until exit."""
    if not settings.database_url:
        raise LichenError(
            ErrorCode.INVALID_REQUEST,
            "a gateway shares the network's database with its trackers: set "
            "LICHEN_DATABASE_URL (e.g. postgresql+asyncpg://lichen@db/lichen)",
        )
    started = time.time()
    ensure_private_dir(settings.data_dir, fix_existing=True)
    async with contextlib.AsyncExitStack() as exits:
        shared = await start_shared(settings, identity, exits)
        db, accounting = shared.db, shared.accounting
        bus = await connect_bus(exits, settings, "gateway")
        directory = Directory(
            bus, Subjects.for_network(identity.network_public), beat_s=settings.cluster_beat_s
        )
        health_checks: list[Callable[[], str | None]] = [_bus_check(bus)]
        api = build_gateway(
            GatewayOptions.from_settings(settings),
            registry=directory.registry,
            reputation=accounting.reputation,
            record=RequestLogRepository(db).record,
            accounting=accounting,
            pipeline=shared.privacy.pipeline,
            trust_for=shared.privacy.policy.allowed_trust,
            metrics=shared.metrics,
            operator=shared.operator,
            health_checks=health_checks,
            started=started,
        )
        exits.push_async_callback(api.completions.drain)  # refusals still being recorded
        mount_admin(
            api.app,
            db,
            accounting,
            MembershipRepository(db),
            identity.network_key,
            public_url=settings.public_url,
            serves_nodes=False,  # nodes dial a tracker: invites need its URL
        )
        build_web(
            api.app,
            settings,
            privacy=shared.privacy,
            registry=directory.registry,
            requests=RequestLogRepository(db),
            started=started,
            reputation=accounting.reputation,
            accounting=accounting,
            operator=shared.operator,
        )
        await directory.start()
        exits.push_async_callback(directory.stop)
        options = HttpOptions.from_settings(settings)
        http = HttpServer(api.app, host=settings.host, port=settings.port, options=options)
        exits.push_async_callback(http.stop)  # first to stop
        port = await http.start()
        url = f"{http.scheme}://{dial_host(settings.host)}:{port}"
        log.info("gateway listening on %s (bus %s)", url, redacted_url(settings.nats_url or ""))
        yield GatewayStack(
            settings=settings,
            db=db,
            directory=directory,
            gateway=api,
            accounting=accounting,
            app=api.app,
            port=port,
            url=url,
        )


def _bus_check(bus: Bus) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if bus.connected else "the message bus is unreachable"

    return check
