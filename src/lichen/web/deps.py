"""What the web UI is built from; every service is handed in by the composition root."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from lichen.gateway.services import GatewayServices
from lichen.http.operator import OperatorGate
from lichen.reputation.book import Reputation
from lichen.storage.repositories import RequestLogRepository
from lichen.tracker.api import AuditRecords
from lichen.tracker.registry import Registry
from lichen.web.policy_view import FeedSource, NeutralPolicy, PolicyView
from lichen.web.telemetry import FileTelemetrySetting, TelemetrySetting


@dataclass
class WebDeps:
    registry: Registry  # live nodes (network dashboard, model picker)
    data_dir: Path  # home of the fallback telemetry setting file
    requests: RequestLogRepository | None = None  # request log (rates, node totals)
    started: float = field(default_factory=time.time)  # process start, for uptime
    local_peer_id: str | None = None  # the node running in this process, if any
    telemetry: TelemetrySetting | None = None  # default: a file under data_dir
    telemetry_override: bool | None = None  # LICHEN_TELEMETRY, which beats the saved setting
    policy: PolicyView = field(default_factory=NeutralPolicy)
    reputation: Reputation | None = None  # the scheduler's view of each node
    feed: FeedSource | None = None  # public posts, on networks whose policy has a feed
    accounting: GatewayServices | None = None  # accounts, sessions, keys, usage, ledger
    operator: OperatorGate | None = None  # guards /ui/api/node (an operator surface)
    audits: AuditRecords | None = None  # each node's audit record (issue 11), when on

    def __post_init__(self) -> None:
        if self.telemetry is None:
            self.telemetry = FileTelemetrySetting(self.data_dir)

    @property
    def telemetry_setting(self) -> TelemetrySetting:
        assert self.telemetry is not None
        return self.telemetry
