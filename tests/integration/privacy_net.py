"""An in-process network with the privacy feature wired in, for the privacy tests.

Like ``fakes.LocalNetwork`` (whose engine and helpers it reuses), but built the way
the tracker role builds it: a policy file in the data dir, a SQLite database under
the policy guard, the signed policy in ``Welcome``, the pipeline in the completion
service, the privacy routes on the app. Nodes are real agents on the real wire
protocol; their :class:`FakeEngine` records every request the node received.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fakes import FakeEngine, RunningNode, eventually, start_owned_node

from lichen.config import Settings
from lichen.identity.store import load_identity
from lichen.privacy.policy import preset_text
from lichen.privacy.runtime import PrivacyRuntime
from lichen.roles.gateway import GatewayOptions, build_gateway
from lichen.roles.web import build_web
from lichen.server import HttpServer
from lichen.storage import RequestLogRepository, create_engine, migrate
from lichen.tracker.admission import OwnerAdmission
from lichen.tracker.service import NODE_PATH, TrackerService


@dataclass
class PrivacyNetwork:
    root: Path
    policy_text: str
    nodes: list[RunningNode] = field(default_factory=list)

    @classmethod
    def for_preset(cls, root: Path, preset: str) -> PrivacyNetwork:
        return cls(root, preset_text(preset))

    @property
    def data_dir(self) -> Path:
        return self.root / "gateway"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "lichen.db"

    async def start(self) -> PrivacyNetwork:
        self.data_dir.mkdir(parents=True)
        (self.data_dir / "policy.toml").write_text(self.policy_text, encoding="utf-8")
        self.identity = load_identity(self.data_dir)
        url = f"sqlite+aiosqlite:///{self.db_path}"
        await migrate(url)
        self.db = create_engine(url)
        self.privacy = PrivacyRuntime.build(
            data_dir=self.data_dir, network_key=self.identity.network_key, db=self.db
        )
        self.tracker = TrackerService(
            network_key=self.identity.network_key,
            admission=OwnerAdmission(self.identity.account_public),
            policy=self.privacy.wire_policy,
            telemetry=self.privacy.telemetry_sink,
        )
        self.app = build_gateway(  # the role builders, as the tracker composes them
            GatewayOptions(max_request_bytes=64 * 1024, timeout_s=30.0),
            registry=self.tracker.registry,
            record=RequestLogRepository(self.db).record,
            pipeline=self.privacy.pipeline,
            trust_for=self.privacy.policy.allowed_trust,
        ).app
        self.app.add_api_websocket_route(NODE_PATH, self.tracker.endpoint)
        build_web(self.app, Settings(data_dir=self.data_dir), privacy=self.privacy)
        await self.tracker.start()
        await self.privacy.start()
        self.http = HttpServer(self.app, host="127.0.0.1", port=0)
        self.port = await self.http.start()
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=30.0)
        return self

    async def add_node(
        self, engine: FakeEngine, name: str, *, wait: bool = True, **config: Any
    ) -> RunningNode:
        node = start_owned_node(
            self.root / name,
            owner_dir=self.data_dir,
            port=self.port,
            network_public=self.identity.network_public,
            engine=engine,
            name=name,
            **config,
        )
        self.nodes.append(node)
        if wait:
            await eventually(
                lambda: self.tracker.registry.get(node.peer_id) is not None,
                what=f"node {name} to join",
            )
        return node

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, read straight from the SQLite file (WAL included)."""
        connection = sqlite3.connect(self.db_path)
        try:
            tables = [
                r[0]
                for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            return {t: connection.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}
        finally:
            connection.close()

    def files(self) -> dict[str, bytes]:
        """Every file under the network's root (gateway/tracker and every node)."""
        return {str(p): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()}

    async def close(self) -> None:
        await self.client.aclose()
        for node in self.nodes:
            await node.agent.stop()
        await asyncio.gather(*(n.task for n in self.nodes), return_exceptions=True)
        await self.privacy.stop()
        await self.tracker.stop()
        await self.http.stop()
        await self.db.dispose()
