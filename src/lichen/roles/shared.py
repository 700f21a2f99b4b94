"""What every server role of a network shares: the database, the privacy runtime,
accounting, the operator gate and the process's metrics.

A tracker and a gateway both need them (the tracker: reputation, the ledger for audit
penalties, the uploaders' accounts, the signed policy; the gateway: accounts, quotas,
the privacy pipeline), so the composition root starts them once with
:func:`start_shared` and hands them to :func:`lichen.roles.tracker.build_tracker`,
:func:`lichen.roles.gateway.build_gateway` and :func:`lichen.roles.web.build_web`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.config import Settings
from lichen.gateway.services import GatewayServices
from lichen.http.operator import OperatorGate
from lichen.identity.store import Identity
from lichen.privacy.runtime import PrivacyRuntime
from lichen.storage.engine import create_engine, migrate


@dataclass(frozen=True)
class Shared:
    """The services a network's server roles share, started."""

    db: AsyncEngine
    privacy: PrivacyRuntime  # the signed policy, its pipeline, telemetry sink, retention
    accounting: GatewayServices  # accounts, keys, quotas, the ledger, persisted reputation
    operator: OperatorGate  # guards /metrics, /v1/network, /ui/api/node
    metrics: CollectorRegistry  # /metrics of this process


async def start_shared(
    settings: Settings, identity: Identity, exits: contextlib.AsyncExitStack
) -> Shared:
    """Migrate and open the database, then build and start the shared services;
    ``exits`` stops them (and disposes of the database) in the reverse order."""
    db = create_engine(settings.database)
    exits.push_async_callback(db.dispose)
    await migrate(settings.database)
    privacy = PrivacyRuntime.build(
        data_dir=settings.data_dir,
        network_key=identity.network_key,
        db=db,
        sweep_every_s=settings.retention_sweep_s,
    )
    accounting = GatewayServices.build(settings, db, identity.network_key)
    await privacy.start()
    exits.push_async_callback(privacy.stop)
    await accounting.start()
    exits.push_async_callback(accounting.stop)
    return Shared(db, privacy, accounting, OperatorGate.build(settings), CollectorRegistry())
