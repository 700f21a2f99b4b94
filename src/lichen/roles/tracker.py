"""The tracker role: membership, the live registry and (usually) the gateway, on one port.

:func:`build_tracker` wires the tracker's own parts (membership at the door, the
live registry, revocations, last-seen times, the model catalog, audits and their
routes); :func:`tracker_stack` composes it with the gateway
(:func:`lichen.roles.gateway.build_gateway`) and the web pages
(:func:`lichen.roles.web.build_web`) and runs them. ``lichen tracker`` and
``lichen up`` both use it (``up`` adds a node of its own). Background work starts
on one :class:`contextlib.AsyncExitStack`, so it stops in the reverse order and a
failure half-way through start stops what had started. While it runs, the stack
writes ``<data dir>/tracker.json`` with its address, so the operator's CLI on the
same machine (``lichen invite create``, ``lichen network show``) can find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen import __version__
from lichen.audit.service import AuditService, audits_on
from lichen.clock import now_ms
from lichen.config import Settings
from lichen.gateway.admin import mount_admin
from lichen.gateway.body_limit import BodyLimitMiddleware, BodyLimits
from lichen.gateway.origin import HostPolicy, OriginGuardMiddleware
from lichen.gateway.services import GatewayServices
from lichen.http.errors import install_error_handlers
from lichen.http.operator import OperatorGate
from lichen.identity._files import ensure_private_dir
from lichen.identity.store import Identity
from lichen.metrics import metrics_endpoint
from lichen.node.join import dial_url
from lichen.privacy.runtime import PrivacyRuntime
from lichen.roles.cluster import tracker_relay
from lichen.roles.gateway import Gateway, GatewayOptions, build_gateway, build_scheduler
from lichen.roles.shared import start_shared
from lichen.roles.web import build_web
from lichen.routing.scheduler import Scheduler
from lichen.server import HttpOptions, HttpServer, dial_host
from lichen.storage.membership import MembershipRepository
from lichen.storage.repositories import RequestLogRepository
from lichen.tasks import cancel_and_wait
from lichen.tracker.api import mount_tracker
from lichen.tracker.membership import AdmissionLimiter, InviteAdmission, SeenBuffer
from lichen.tracker.metrics import TrackerCollector
from lichen.tracker.model_routes import ModelService, mount_models
from lichen.tracker.model_uploads import mount_uploads, uploader_auth
from lichen.tracker.registry import Registry
from lichen.tracker.relay import NodeRelay
from lichen.tracker.revocations import RevocationWatcher
from lichen.tracker.service import NODE_PATH, TrackerService
from lichen.transport.handshake import Peer

log = logging.getLogger(__name__)

RUNTIME_FILE = "tracker.json"


@dataclass(frozen=True)
class TrackerInfo:
    """Where a running tracker listens (``<data dir>/tracker.json``)."""

    url: str  # http base URL on this machine
    node_url: str  # WebSocket URL nodes dial (the public URL if one is configured)
    pid: int
    network_key: str  # hex of the network public key
    started_ms: int
    tls_certfile: str = ""  # the served certificate: local CLI calls trust exactly it


def read_tracker_info(data_dir: Path) -> TrackerInfo | None:
    """The running tracker's address, or None if none is recorded (or the file is stale)."""
    try:
        raw = json.loads((data_dir / RUNTIME_FILE).read_text(encoding="utf-8"))
        info = TrackerInfo(**raw)
    except (OSError, ValueError, TypeError):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return info


def node_url(public_url: str | None, host: str, port: int, *, tls: bool = False) -> str:
    """The URL to put in invites: the configured public URL, else the bound address."""
    if public_url:
        return dial_url(public_url)
    return f"{'wss' if tls else 'ws'}://{dial_host(host)}:{port}{NODE_PATH}"


@dataclass
class TrackerRole:
    """A built tracker: membership at the door, the live registry, models and audits."""

    settings: Settings
    members: MembershipRepository
    admission: InviteAdmission
    seen: SeenBuffer  # last-seen times, written in batches
    tracker: TrackerService
    watcher: RevocationWatcher
    models: ModelService  # signed model catalog, chunk store, transfer links
    accounting: GatewayServices  # reputation, ledger (audit penalties), uploaders' accounts
    audits: AuditService | None = None  # probes and verdicts (settings.audits)

    def mount(self, app: FastAPI, operator: OperatorGate) -> None:
        """Add the node link, the network view, the model catalog and uploads to ``app``."""
        acc = self.accounting
        mount_tracker(app, self.tracker, acc.reputation, operator, audits=self.audits)
        mount_models(app, self.models, operator)
        mount_uploads(
            app,
            self.models,
            uploader_auth(acc.authenticator, acc.accounts, self.settings.uploaders()),
            quota_bytes=self.settings.model_upload_quota_bytes,
        )

    async def start(self, exits: contextlib.AsyncExitStack) -> None:
        """Start the tracker's parts; ``exits`` stops them, last started first."""
        exits.push_async_callback(self.seen.flush)  # after the links closed (they note it)
        await self.admission.preload()  # reconnecting members need no database read
        await self.tracker.start()
        exits.push_async_callback(self.tracker.stop)
        if self.audits is not None:
            await self.audits.start()
            exits.push_async_callback(self.audits.stop)
        await self.models.start(seed=self.settings.model)
        exits.push_async_callback(self.models.stop)
        background(exits, self.watcher.run(), "revocation-watcher")
        background(exits, self.seen.run(), "last-seen-writer")


def build_tracker(
    settings: Settings,
    identity: Identity,
    *,
    db: AsyncEngine,
    privacy: PrivacyRuntime,
    accounting: GatewayServices,
    metrics: CollectorRegistry | None = None,
    registry: Registry | None = None,
    relay: NodeRelay | None = None,
) -> TrackerRole:
    """The tracker's parts over ``db``, under the network's privacy policy; its node
    registry's collector goes into ``metrics`` when given. In a cluster, ``relay``
    shares ``registry``'s nodes with the gateways on the bus. Nothing starts here."""
    members = MembershipRepository(db)
    seen = SeenBuffer(members)

    async def left(peer: Peer) -> None:
        seen.note(peer.peer_id, now_ms())

    admission = InviteAdmission(
        members,
        network_key=identity.network_public,
        owner_account=identity.account_public,
        mode=settings.network_mode,
        limiter=AdmissionLimiter.from_settings(
            settings, identity.network_key, limiter=accounting.limiter
        ),  # shared by every tracker through redis_url
        seen=seen,
    )
    tracker = TrackerService(
        network_key=identity.network_key,
        admission=admission,
        heartbeat_s=settings.heartbeat_s,
        on_leave=left,
        policy=privacy.wire_policy,
        telemetry=privacy.telemetry_sink,
        registry=registry,
        relay=relay,
    )
    audits = None
    if audits_on(settings):  # probes re-scored by the tracker's reference models (issue 11)
        audits = AuditService.for_tracker(
            settings, db, tracker.registry, accounting.reputation, accounting.ledger, privacy.policy
        )
    models = ModelService.build(
        db=db,
        models_dir=settings.models_path,
        network_key=identity.network_key,
        admission=admission,
        reputation=accounting.reputation,
        policy=privacy.wire_policy,
    )
    watcher = RevocationWatcher(
        members, tracker.disconnect, poll_s=settings.membership_poll_s, forget=admission.forget
    )
    if metrics is not None:
        metrics.register(TrackerCollector(tracker.registry))
    return TrackerRole(
        settings, members, admission, seen, tracker, watcher, models, accounting, audits
    )


def background(
    exits: contextlib.AsyncExitStack, work: Coroutine[Any, Any, None], name: str
) -> asyncio.Task[None]:
    """Run ``work`` as a task that ``exits`` cancels and waits for."""
    task = asyncio.create_task(work, name=name)
    exits.push_async_callback(cancel_and_wait, task)
    return task


@dataclass
class TrackerStack:
    """A running tracker: what the composition roots hold on to."""

    settings: Settings
    identity: Identity
    db: AsyncEngine
    members: MembershipRepository
    tracker: TrackerService
    scheduler: Scheduler  # the gateway's (without one, a scheduler nothing routes with)
    app: FastAPI
    port: int
    url: str  # http://host:port on this machine
    local_node_url: str  # ws(s):// on loopback, for a node on this machine (`lichen up`s own
    # node joins through `tracker.in_process_link` instead)
    info: TrackerInfo
    metrics: CollectorRegistry  # /metrics of this process; a node in it adds its collector
    accounting: GatewayServices | None = None  # accounts, keys, quotas, ledger, reputation
    audits: AuditService | None = None  # probes and verdicts (settings.audits)
    # /health problems from this process (e.g. its own engine's watchdog), appended by `up`
    health_checks: list[Callable[[], str | None]] = field(default_factory=list)
    models: ModelService | None = None  # signed model catalog, chunk store, transfer links
    gateway: Gateway | None = None  # the API's completion service and scheduler


def _bare_app(
    tracker: TrackerService, settings: Settings, metrics: CollectorRegistry, operator: OperatorGate
) -> FastAPI:
    """The app of a tracker without its gateway: /health, /metrics, the tracker's routes."""
    app = FastAPI(title="Lichen tracker", version=__version__, docs_url=None, redoc_url=None)
    install_error_handlers(app)  # typed errors (e.g. the operator gate's 401)

    async def health() -> JSONResponse:
        nodes = len(tracker.registry)
        return JSONResponse({"status": "ok", "version": __version__, "nodes": nodes})

    app.add_api_route("/health", health, methods=["GET"])
    app.add_middleware(BodyLimitMiddleware, limits=BodyLimits.from_settings(settings))
    app.add_middleware(OriginGuardMiddleware, policy=HostPolicy.from_settings(settings))
    app.add_api_route(
        "/metrics",
        metrics_endpoint(metrics),
        include_in_schema=False,
        dependencies=[Depends(operator)],
    )
    return app


@contextlib.asynccontextmanager
async def tracker_stack(
    settings: Settings, identity: Identity, *, gateway: bool = True
) -> AsyncIterator[TrackerStack]:
    """Build and run a tracker (with the gateway unless ``gateway=False``) until exit."""
    started = time.time()
    ensure_private_dir(settings.data_dir, fix_existing=True)  # database, keys, kept data
    async with contextlib.AsyncExitStack() as exits:
        shared = await start_shared(settings, identity, exits)
        db, privacy, accounting = shared.db, shared.privacy, shared.accounting
        operator, metrics = shared.operator, shared.metrics
        registry = Registry()
        relay = (  # a cluster: this tracker's nodes are shared with the gateways on the bus
            await tracker_relay(exits, settings, identity, registry) if settings.nats_url else None
        )
        role = build_tracker(
            settings,
            identity,
            db=db,
            privacy=privacy,
            accounting=accounting,
            metrics=metrics,
            registry=registry,
            relay=relay,
        )
        audits = role.audits
        health_checks: list[Callable[[], str | None]] = []
        api_options = GatewayOptions.from_settings(settings)
        blocked = audits.quarantined if audits is not None else None  # quarantined by audits
        trust_for = privacy.policy.allowed_trust
        api: Gateway | None = None
        if gateway:
            api = build_gateway(
                api_options,
                registry=registry,
                reputation=accounting.reputation,
                record=RequestLogRepository(db).record,
                accounting=accounting,
                pipeline=privacy.pipeline,
                trust_for=trust_for,
                blocked=blocked,
                audits=audits.traffic if audits is not None else None,  # issue 11
                metrics=metrics,
                operator=operator,
                health_checks=health_checks,
                started=started,
            )
            scheduler = api.scheduler
            # after the HTTP server stopped (pushed later, runs earlier), before the database
            exits.push_async_callback(api.completions.drain)
        else:
            scheduler = build_scheduler(
                api_options,
                registry=registry,
                reputation=accounting.reputation,
                trust_for=trust_for,
                blocked=blocked,
            )
        app = api.app if api is not None else _bare_app(role.tracker, settings, metrics, operator)
        role.mount(app, operator)
        # /v1/admin: invites, members, grants for operator keys from any machine (issue 12)
        mount_admin(
            app,
            db,
            accounting,
            role.members,
            identity.network_key,
            public_url=settings.public_url,
            serves_nodes=True,  # role.mount added the node link to this app
        )
        build_web(
            app,
            settings,
            privacy=privacy,
            registry=registry if gateway else None,  # no gateway: the privacy pages only
            requests=RequestLogRepository(db),
            started=started,
            local_peer_id=identity.peer_id,  # `lichen up` runs its node as this peer
            reputation=accounting.reputation,
            accounting=accounting,
            operator=operator,
            audits=audits,
        )
        await role.start(exits)
        options = HttpOptions.from_settings(settings)
        http = HttpServer(app, host=settings.host, port=settings.port, options=options)
        exits.push_async_callback(http.stop)  # first to stop: no request reaches a stopped part
        port = await http.start()
        host = dial_host(settings.host)
        info = TrackerInfo(
            url=f"{http.scheme}://{host}:{port}",
            node_url=node_url(settings.public_url, settings.host, port, tls=options.tls),
            pid=os.getpid(),
            network_key=identity.network_public.hex(),
            started_ms=now_ms(),
            tls_certfile=str(options.tls_certfile or ""),
        )
        _publish(exits, settings.data_dir, info)
        log.info(
            "tracker listening on %s (%s network%s)",
            info.url,
            settings.network_mode,
            "" if gateway else ", no gateway",
        )
        yield TrackerStack(
            settings=settings,
            identity=identity,
            db=db,
            members=role.members,
            tracker=role.tracker,
            scheduler=scheduler,
            app=app,
            port=port,
            url=info.url,
            local_node_url=f"{'wss' if options.tls else 'ws'}://{host}:{port}{NODE_PATH}",
            info=info,
            metrics=metrics,
            accounting=accounting,
            audits=audits,
            health_checks=health_checks,
            models=role.models,
            gateway=api,
        )


def _publish(exits: contextlib.AsyncExitStack, data_dir: Path, info: TrackerInfo) -> None:
    """Write ``<data_dir>/tracker.json``; ``exits`` removes it if it is still ours."""
    runtime = data_dir / RUNTIME_FILE
    runtime.write_text(json.dumps(asdict(info)), encoding="utf-8")

    def unpublish() -> None:
        recorded = read_tracker_info(data_dir)
        if recorded is not None and recorded.pid == os.getpid():
            with contextlib.suppress(OSError):
                runtime.unlink()

    exits.callback(unpublish)
