"""In-process cluster pieces on a real NATS server: trackers with relays, gateways with
directories, and fake-engine nodes joining a tracker over the real wire protocol."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from fakes import FakeEngine, RunningNode, eventually, start_owned_node
from fastapi import FastAPI

from lichen.cluster.bus import Bus
from lichen.cluster.directory import Directory
from lichen.cluster.messages import Subjects
from lichen.cluster.tracker_relay import TrackerRelay
from lichen.identity.store import Identity, load_identity
from lichen.roles.gateway import GatewayOptions, build_gateway
from lichen.server import HttpServer
from lichen.tracker.admission import OwnerAdmission
from lichen.tracker.registry import Registry
from lichen.tracker.service import NODE_PATH, TrackerService


@dataclass
class ClusterTracker:
    name: str
    bus: Bus
    relay: TrackerRelay
    service: TrackerService
    http: HttpServer
    port: int
    nodes: list[RunningNode] = field(default_factory=list)

    async def stop(self, *, abrupt: bool = False) -> None:
        """Stop; ``abrupt`` drops off the bus without saying goodbye (as ``kill -9`` would)."""
        for node in self.nodes:
            await node.agent.stop()
        await asyncio.gather(*(n.task for n in self.nodes), return_exceptions=True)
        if not abrupt:
            await self.relay.stop()
        await self.service.stop()
        await self.http.stop()
        await self.bus.close()


@dataclass
class ClusterGateway:
    bus: Bus
    directory: Directory
    client: httpx.AsyncClient

    async def stop(self) -> None:
        await self.client.aclose()
        await self.directory.stop()
        await self.bus.close()


@dataclass
class Cluster:
    """One network: an owner identity, any number of trackers and gateways, one NATS."""

    root: Path
    nats_url: str
    trackers: list[ClusterTracker] = field(default_factory=list)
    gateways: list[ClusterGateway] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.identity: Identity = load_identity(self.root / "owner")
        self.subjects = Subjects.for_network(self.identity.network_public)

    async def add_tracker(self, name: str) -> ClusterTracker:
        bus = await Bus.connect(self.nats_url, name=f"tracker-{name}")
        registry = Registry()
        relay = TrackerRelay(bus, self.subjects, registry, beat_s=0.2)
        service = TrackerService(
            network_key=self.identity.network_key,
            admission=OwnerAdmission(self.identity.account_public),
            registry=registry,
            relay=relay,
        )
        app = FastAPI()
        app.add_api_websocket_route(NODE_PATH, service.endpoint)
        await relay.start()
        await service.start()
        http = HttpServer(app, host="127.0.0.1", port=0)
        port = await http.start()
        tracker = ClusterTracker(name, bus, relay, service, http, port)
        self.trackers.append(tracker)
        return tracker

    async def add_node(self, tracker: ClusterTracker, engine: FakeEngine, name: str) -> RunningNode:
        node = start_owned_node(
            self.root / name,
            owner_dir=self.root / "owner",
            port=tracker.port,
            network_public=self.identity.network_public,
            engine=engine,
            name=name,
        )
        tracker.nodes.append(node)
        await eventually(
            lambda: tracker.service.registry.get(node.peer_id) is not None,
            what=f"node {name} to join",
        )
        return node

    async def add_gateway(self, *, stall_timeout_s: float = 30.0) -> ClusterGateway:
        bus = await Bus.connect(self.nats_url, name="gateway")
        directory = Directory(bus, self.subjects, beat_s=0.2)
        gateway_app = build_gateway(
            GatewayOptions(first_token_timeout_s=10.0, stall_timeout_s=stall_timeout_s),
            registry=directory.registry,
        ).app
        await directory.start()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway_app), base_url="http://gateway", timeout=30.0
        )
        gateway = ClusterGateway(bus, directory, client)
        self.gateways.append(gateway)
        return gateway

    async def sees(self, gateway: ClusterGateway, *nodes: RunningNode) -> None:
        await eventually(
            lambda: all(gateway.directory.registry.get(n.peer_id) is not None for n in nodes),
            what="the gateway to see the nodes",
        )

    async def close(self) -> None:
        for gateway in self.gateways:
            await gateway.stop()
        for tracker in self.trackers:
            await tracker.stop()
