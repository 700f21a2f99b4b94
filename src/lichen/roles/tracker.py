"""The tracker role: membership, the live registry and (usually) the gateway, on one port.

:func:`tracker_stack` builds and runs it; ``lichen tracker`` and ``lichen up``
both use it (``up`` adds a node of its own). While it runs, the stack writes
``<data dir>/tracker.json`` with its address, so the operator's CLI on the same
machine (``lichen invite create``, ``lichen network show``) can find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen import __version__
from lichen.audit.service import AuditService, audits_on
from lichen.clock import now_ms
from lichen.config import Settings
from lichen.gateway.app import GatewayDeps, create_app
from lichen.gateway.body_limit import BodyLimitMiddleware, BodyLimits
from lichen.gateway.completions import CompletionService
from lichen.gateway.limits import RequestLimits
from lichen.gateway.metrics import GatewayMetrics
from lichen.gateway.origin import HostPolicy, OriginGuardMiddleware
from lichen.gateway.services import GatewayServices
from lichen.http.errors import install_error_handlers
from lichen.http.operator import OperatorGate
from lichen.identity._files import ensure_private_dir
from lichen.identity.store import Identity
from lichen.metrics import metrics_endpoint
from lichen.models.catalog import lookup as catalog_lookup
from lichen.node.join import dial_url
from lichen.privacy.runtime import PrivacyRuntime
from lichen.routing.router import Router
from lichen.routing.scheduler import Scheduler
from lichen.server import HttpOptions, HttpServer, pinned_tls
from lichen.storage.engine import create_engine, migrate
from lichen.storage.membership import MembershipRepository
from lichen.storage.repositories import RequestLogRepository
from lichen.tasks import cancel_and_wait
from lichen.tracker.api import mount_tracker
from lichen.tracker.membership import AdmissionLimiter, InviteAdmission, SeenBuffer
from lichen.tracker.metrics import TrackerCollector
from lichen.tracker.model_routes import ModelService, mount_models
from lichen.tracker.model_uploads import mount_uploads, uploader_auth
from lichen.tracker.revocations import RevocationWatcher
from lichen.tracker.service import NODE_PATH, TrackerService
from lichen.transport.handshake import Peer
from lichen.web import WebDeps, install_web
from lichen.web.privacy_routes import install_privacy

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
    return f"{'wss' if tls else 'ws'}://{_dial_host(host)}:{port}{NODE_PATH}"


def _dial_host(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@dataclass
class TrackerStack:
    """A running tracker: what the composition roots hold on to."""

    settings: Settings
    identity: Identity
    db: AsyncEngine
    members: MembershipRepository
    tracker: TrackerService
    scheduler: Scheduler
    app: FastAPI
    port: int
    url: str  # http://host:port on this machine
    local_node_url: str  # ws:// on loopback, for a node in this process or on this machine
    info: TrackerInfo
    metrics: CollectorRegistry  # /metrics of this process; a node in it adds its collector
    accounting: GatewayServices | None = None  # accounts, keys, quotas, ledger, reputation
    audits: AuditService | None = None  # probes and verdicts (settings.audits)
    local_tls: ssl.SSLContext | None = None  # a node in this process trusts our own cert
    # /health problems from this process (e.g. its own engine's watchdog), appended by `up`
    health_checks: list[Callable[[], str | None]] = field(default_factory=list)
    models: ModelService | None = None  # signed model catalog, chunk store, transfer links


def _bare_app(tracker: TrackerService) -> FastAPI:
    app = FastAPI(title="Lichen tracker", version=__version__, docs_url=None, redoc_url=None)
    install_error_handlers(app)  # typed errors (e.g. the operator gate's 401)

    async def health() -> JSONResponse:
        nodes = len(tracker.registry)
        return JSONResponse({"status": "ok", "version": __version__, "nodes": nodes})

    app.add_api_route("/health", health, methods=["GET"])
    return app


@contextlib.asynccontextmanager
async def tracker_stack(
    settings: Settings, identity: Identity, *, gateway: bool = True
) -> AsyncIterator[TrackerStack]:
    """Build and run a tracker (with the gateway unless ``gateway=False``) until exit."""
    started = time.time()
    db = create_engine(settings.database)
    http: HttpServer | None = None
    tracker: TrackerService | None = None
    watcher_task: asyncio.Task[None] | None = None
    seen_task: asyncio.Task[None] | None = None
    seen: SeenBuffer | None = None
    privacy: PrivacyRuntime | None = None
    accounting: GatewayServices | None = None
    audits: AuditService | None = None
    models: ModelService | None = None
    runtime = settings.data_dir / RUNTIME_FILE
    ensure_private_dir(settings.data_dir, fix_existing=True)  # database, keys, kept data
    try:
        await migrate(settings.database)
        members = MembershipRepository(db)
        privacy = PrivacyRuntime.build(
            data_dir=settings.data_dir,
            network_key=identity.network_key,
            db=db,
            sweep_every_s=settings.retention_sweep_s,
        )

        seen = SeenBuffer(members)  # last-seen times, written in batches

        async def left(peer: Peer) -> None:
            seen.note(peer.peer_id, now_ms())

        admission = InviteAdmission(
            members,
            network_key=identity.network_public,
            owner_account=identity.account_public,
            mode=settings.network_mode,
            limiter=AdmissionLimiter(settings.admissions_per_ip_hour),
            seen=seen,
        )
        await admission.preload()  # reconnecting members need no database read
        operator = OperatorGate.build(settings)  # /metrics, /v1/network, /ui/api/node
        health_checks: list[Callable[[], str | None]] = []
        tracker = TrackerService(
            network_key=identity.network_key,
            admission=admission,
            heartbeat_s=settings.heartbeat_s,
            on_leave=left,
            policy=privacy.wire_policy,
        )
        tracker.telemetry = privacy.telemetry_sink
        # Accounts, API keys, quotas, the credit ledger, and the persisted reputation.
        accounting = GatewayServices.build(settings, db, identity.network_key)
        reputation = accounting.reputation
        scheduler = Scheduler(tracker.registry, reputation)
        scheduler.trust_for = privacy.policy.allowed_trust
        scheduler.alias_of = _catalog_name  # "smollm2" names smollm2-135m, as in the CLI
        if not settings.affinity:  # LICHEN_AFFINITY=false: no prefix affinity (issue 16)
            scheduler.affinity = None
        scheduler.queue_per_slot = settings.queue_per_slot  # None: the nodes' queues decide
        if audits_on(settings):  # probes re-scored by the tracker's reference models (issue 11)
            audits = AuditService.for_tracker(
                settings, db, tracker.registry, reputation, accounting.ledger, privacy.policy
            )
            scheduler.blocked = audits.quarantined
        metrics = CollectorRegistry()
        metrics.register(TrackerCollector(tracker.registry))
        if gateway:
            gateway_metrics = GatewayMetrics(metrics)
            completions = CompletionService(
                router=Router(
                    scheduler,
                    first_token_timeout_s=settings.first_token_timeout_s,
                    stall_timeout_s=settings.stall_timeout_s,
                ),
                scheduler=scheduler,
                max_request_bytes=settings.max_request_bytes,
                timeout_s=settings.request_timeout_s,
                record=RequestLogRepository(db).record,
                metrics=gateway_metrics,
                pipeline=privacy.pipeline,
                limits=RequestLimits.from_settings(settings),
                audits=audits.traffic if audits is not None else None,  # issue 11
            )
            app = create_app(
                GatewayDeps(
                    registry=tracker.registry,
                    completions=completions,
                    started=started,
                    metrics=gateway_metrics,
                    accounting=accounting,
                    body_limits=BodyLimits.from_settings(settings),
                    hosts=HostPolicy.from_settings(settings),
                    operator=operator,
                    health_checks=health_checks,
                )
            )
            install_web(
                app,
                WebDeps(
                    registry=tracker.registry,
                    data_dir=settings.data_dir,
                    requests=RequestLogRepository(db),
                    started=started,
                    local_peer_id=identity.peer_id,  # `lichen up` runs its node as this peer
                    reputation=reputation,
                    policy=privacy.view,
                    telemetry_override=settings.telemetry,
                    feed=privacy.content,
                    accounting=accounting,
                    operator=operator,
                    audits=audits,  # each node's audit record on the dashboard (issue 11)
                ),
            )
        else:
            app = _bare_app(tracker)
            app.add_middleware(BodyLimitMiddleware, limits=BodyLimits.from_settings(settings))
            app.add_middleware(OriginGuardMiddleware, policy=HostPolicy.from_settings(settings))
            app.add_api_route(
                "/metrics",
                metrics_endpoint(metrics),
                include_in_schema=False,
                dependencies=[Depends(operator)],
            )
        mount_tracker(app, tracker, reputation, operator, audits=audits)
        models = ModelService.build(
            db=db,
            models_dir=settings.models_path,
            network_key=identity.network_key,
            admission=admission,
            reputation=reputation,
            policy=privacy.wire_policy,
        )
        mount_models(app, models, operator)
        mount_uploads(
            app,
            models,
            uploader_auth(accounting.authenticator, accounting.accounts, settings.uploaders()),
            quota_bytes=settings.model_upload_quota_bytes,
        )
        install_privacy(app, privacy.service)  # after the web UI: its /privacy page wins
        await tracker.start()
        await privacy.start()
        await accounting.start()
        if audits is not None:
            await audits.start()
        await models.start(seed=settings.model)
        watcher = RevocationWatcher(
            members,
            tracker.disconnect,
            poll_s=settings.membership_poll_s,
            forget=admission.forget,
        )
        watcher_task = asyncio.create_task(watcher.run(), name="revocation-watcher")
        seen_task = asyncio.create_task(seen.run(), name="last-seen-writer")
        options = HttpOptions.from_settings(settings)
        http = HttpServer(app, host=settings.host, port=settings.port, options=options)
        port = await http.start()
        host = _dial_host(settings.host)
        info = TrackerInfo(
            url=f"{http.scheme}://{host}:{port}",
            node_url=node_url(settings.public_url, settings.host, port, tls=options.tls),
            pid=os.getpid(),
            network_key=identity.network_public.hex(),
            started_ms=now_ms(),
            tls_certfile=str(options.tls_certfile or ""),
        )
        runtime.write_text(json.dumps(asdict(info)), encoding="utf-8")
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
            members=members,
            tracker=tracker,
            scheduler=scheduler,
            app=app,
            port=port,
            url=info.url,
            local_node_url=f"{'wss' if options.tls else 'ws'}://{host}:{port}{NODE_PATH}",
            info=info,
            metrics=metrics,
            accounting=accounting,
            audits=audits,
            local_tls=pinned_tls(options.tls_certfile) if options.tls_certfile else None,
            health_checks=health_checks,
            models=models,
        )
    finally:
        recorded = read_tracker_info(settings.data_dir)
        if recorded is not None and recorded.pid == os.getpid():
            with contextlib.suppress(OSError):
                runtime.unlink()
        await cancel_and_wait(watcher_task, seen_task)
        if privacy is not None:
            await privacy.stop()
        if audits is not None:
            await audits.stop()
        if models is not None:
            await models.stop()
        if accounting is not None:
            await accounting.stop()
        if tracker is not None:
            await tracker.stop()
        if http is not None:
            await http.stop()
        if seen is not None:
            await seen.flush()
        await db.dispose()


def _catalog_name(name: str) -> str | None:
    """The catalog's name for ``name`` if it is one of its aliases (case-insensitive)."""
    entry = catalog_lookup(name)
    return entry.name if entry is not None else None
