"""The web role's builder: the web UI's pages and the privacy pages, on a gateway's app.

The pages only read what they are handed (the node registry, the request log,
reputation, accounts, audits, the privacy runtime); they start no background work.
A tracker without its gateway still serves the privacy pages (the network's policy
is public), but no UI.
"""

from __future__ import annotations

import time

from fastapi import FastAPI

from lichen.config import Settings
from lichen.gateway.services import GatewayServices
from lichen.http.operator import OperatorGate
from lichen.privacy.runtime import PrivacyRuntime
from lichen.reputation.book import Reputation
from lichen.storage.repositories import RequestLogRepository
from lichen.tracker.api import AuditRecords
from lichen.tracker.registry import Registry
from lichen.web import WebDeps, install_web
from lichen.web.privacy_routes import install_privacy


def build_web(
    app: FastAPI,
    settings: Settings,
    *,
    privacy: PrivacyRuntime,
    registry: Registry | None = None,
    requests: RequestLogRepository | None = None,
    started: float | None = None,
    local_peer_id: str | None = None,
    reputation: Reputation | None = None,
    accounting: GatewayServices | None = None,
    operator: OperatorGate | None = None,
    audits: AuditRecords | None = None,
) -> None:
    """Add the web UI over ``registry`` (none without one) and the privacy pages to ``app``.

    ``local_peer_id`` is the node running in this process (``lichen up``), if any;
    ``audits`` shows each node's audit record on the dashboard (issue 11).
    """
    if registry is not None:
        install_web(
            app,
            WebDeps(
                registry=registry,
                data_dir=settings.data_dir,
                requests=requests,
                started=started if started is not None else time.time(),
                local_peer_id=local_peer_id,
                reputation=reputation,
                policy=privacy.view,
                telemetry_override=settings.telemetry,
                feed=privacy.content,
                accounting=accounting,
                operator=operator,
                audits=audits,
            ),
        )
    install_privacy(app, privacy.service)  # after the web UI: its /privacy page wins
