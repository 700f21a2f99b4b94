"""The child processes of ``bench/cluster_scale.py`` (run by it, not by hand).

Each role prints ``@{json}`` lines on stdout (``ready``, answers to commands) and
reads one command a line on stdin (``stats``, ``rss``, ``decide N``); EOF or
SIGTERM stops it. Roles:

- ``dir-gateway``: a real gateway (``Directory`` + ``build_gateway``) with no HTTP
  server, for the directory-scale part;
- ``sim-tracker``: the real ``TrackerRelay`` publishing BENCHMARK-ONLY SIMULATED
  NODES: stand-in connections that carry a real device certificate (signed by the
  network owner's account key) and a real signed manifest, and whose heartbeats the
  relay publishes at the node heartbeat rate; they have no link and never run a job;
- ``tracker``: a real ``TrackerService`` with its ``TrackerRelay`` on the bus, and
  its own in-process gateway on the same port (today's single-process path);
- ``nodes``: real ``NodeAgent``s over WebSocket with a BENCHMARK-ONLY INSTANT
  ENGINE: it yields ``max_tokens`` one-token deltas with no delay and no model;
- ``gateway``: a real gateway on the bus (``Directory`` + ``build_gateway``) served
  by uvicorn (``HttpServer``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import shutil
import signal
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lichen.clock import now_ms
from lichen.cluster.bus import Bus
from lichen.cluster.directory import Directory
from lichen.cluster.messages import Subjects
from lichen.cluster.tracker_relay import TrackerRelay
from lichen.engines.base import Delta, EngineEvent, EngineLoad, Finish
from lichen.identity.store import KEYS_DIR, load_identity
from lichen.roles.event_loop import run
from lichen.roles.gateway import GatewayOptions, build_gateway
from lichen.server import HttpServer
from lichen.wire.messages import GenerationRequest, ModelInfo, Usage

MODELS = ["bench-model", "bench-a", "bench-b", "bench-c", "bench-d"]
INSTANT_MODEL = "bench-instant"
WORDS = ["lorem ", "ipsum ", "dolor ", "sit ", "amet, ", "consectetur ", "adipiscing ", "elit "]

Command = Callable[[list[str]], Awaitable[dict[str, Any]]]


def say(event: str, **data: Any) -> None:
    print("@" + json.dumps({"event": event, **data}), flush=True)


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def serve_commands(commands: dict[str, Command]) -> None:
    """Answer commands from stdin until EOF, ``quit`` or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stopper = asyncio.create_task(stop.wait())
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while True:
        reader = asyncio.create_task(stdin.readline())
        done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            reader.cancel()
            return
        line = reader.result().decode()
        words = line.split()
        if not line or words == ["quit"]:
            stopper.cancel()
            return
        if not words:
            continue
        handler = commands.get(words[0])
        if handler is None:
            say("error", message=f"unknown command {words[0]!r}")
            continue
        say(words[0], **await handler(words[1:]))


async def until(condition: Callable[[], bool], *, every_s: float) -> None:
    """Poll ``condition`` (a count another task grows) until it holds."""
    while True:
        if condition():
            return
        await asyncio.sleep(every_s)


class LogCounter(logging.Handler):
    """Counts warnings containing ``needle`` (bench-only instrumentation)."""

    def __init__(self, logger: str, needle: str) -> None:
        super().__init__(logging.WARNING)
        self.needle = needle
        self.count = 0
        logging.getLogger(logger).addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.count += 1


def subjects_of(owner: Path) -> Subjects:
    return Subjects.for_network(load_identity(owner).network_public)


# --- directory scale ------------------------------------------------------------------


async def dir_gateway(args: argparse.Namespace) -> None:
    """A gateway that only holds the directory; times scheduling decisions on request."""
    bus = await Bus.connect(args.nats, name="bench-gateway")
    directory = Directory(bus, subjects_of(args.owner))
    gateway = build_gateway(GatewayOptions(), registry=directory.registry)
    scheduler = gateway.scheduler
    dropped = LogCounter("lichen.cluster.directory", "stopped beating")
    gc.collect()
    say("ready", rss_mb=rss_mb())
    started = time.time()
    await directory.start()

    async def watch() -> None:
        await until(lambda: len(directory.registry) >= args.nodes, every_s=0.01)
        say("holding", at=time.time(), started=started, nodes=len(directory.registry))

    watcher = asyncio.create_task(watch())

    async def stats(_: list[str]) -> dict[str, Any]:
        fresh_after = time.monotonic() - 5.0  # the scheduler's STALE_AFTER_S
        fresh = sum(1 for c in directory.registry if c.state.last_seen >= fresh_after)
        return {
            "in_msgs": bus.client.stats["in_msgs"],
            "nodes": len(directory.registry),
            "fresh": fresh,
            "tracker_drops": dropped.count,  # the gateway took a tracker for dead
            "reconnects": bus.client.stats["reconnects"],  # e.g. cut off as a slow consumer
        }

    async def rss(_: list[str]) -> dict[str, Any]:
        gc.collect()
        return {"rss_mb": rss_mb()}

    async def decide(words: list[str]) -> dict[str, Any]:
        """``resolve_model`` + ``candidates`` for a model every node serves, in batches of
        100 with the loop free in between (heartbeats keep flowing)."""
        wall: list[float] = []
        cpu: list[float] = []
        chosen = 0
        for _ in range(max(1, int(words[0]) // 100)):
            for _ in range(100):
                c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
                candidates = scheduler.candidates(scheduler.resolve_model(MODELS[0]))
                wall.append((time.perf_counter_ns() - t0) / 1e3)
                cpu.append((time.thread_time_ns() - c0) / 1e3)
                chosen = len(candidates)
            await asyncio.sleep(0.001)
        return {"wall_us": wall, "cpu_us": cpu, "candidates": chosen}

    try:
        await serve_commands({"stats": stats, "rss": rss, "decide": decide})
    finally:
        watcher.cancel()
        await directory.stop()
        await bus.close()


async def sim_tracker(args: argparse.Namespace) -> None:
    """BENCHMARK ONLY: the real TrackerRelay announcing simulated nodes, then their beats."""
    from lichen.identity.certs import issue_device_certificate, verify_device_certificate
    from lichen.identity.signing import generate_key, peer_id, public_raw
    from lichen.wire.manifest import sign_manifest
    from lichen.wire.messages import Hardware, Heartbeat

    owner = load_identity(args.owner)
    hardware = Hardware(cpu="simulated", cores=8, ram_mb=16384)
    t0 = time.monotonic()
    nodes: list[tuple[Any, Any]] = []  # (stand-in connection, signed manifest)
    for i in range(args.nodes):
        device = generate_key()
        pid = peer_id(public_raw(device))
        cert = issue_device_certificate(
            owner.account_key, public_raw(device), name=f"sim{i}", now_ms=now_ms()
        )
        models = [
            ModelInfo(name=MODELS[0], sha256="0" * 64, engine="sim", slots=4),
            ModelInfo(name=MODELS[1 + i % 4], sha256="1" * 64, engine="sim", slots=4),
        ]
        manifest = sign_manifest(
            device, name=f"sim{i}", peer_id=pid, models=models, engines=["sim"], hardware=hardware
        )
        peer = SimpleNamespace(
            peer_id=pid,
            certificate=verify_device_certificate(cert, now_ms=now_ms()),
            trust="member",
        )
        nodes.append((SimpleNamespace(peer_id=pid, peer=peer), manifest))
    say("signed", seconds=time.monotonic() - t0, nodes=len(nodes))

    bus = await Bus.connect(args.nats, name="bench-sim-tracker")
    links = {conn.peer_id: conn for conn, _ in nodes}  # the relay only looks nodes up by id
    relay = TrackerRelay(bus, subjects_of(args.owner), links)  # type: ignore[arg-type]
    await relay.start()
    say("announcing", at=time.time())
    started = time.monotonic()
    for i, (conn, manifest) in enumerate(nodes):
        await relay.joined(conn, manifest)  # as each node's link joins this tracker
        if args.announce_rate and i % 100 == 99:  # paced like nodes joining
            await asyncio.sleep(max(0.0, started + (i + 1) / args.announce_rate - time.monotonic()))
    await bus.flush()
    say("announced", at=time.time())

    async def beat() -> None:
        """Every node's heartbeat once per ``heartbeat_s``, spread evenly."""
        hb = Heartbeat(free_slots=4, queue_depth=0, tokens_per_s=50.0)
        tick = 0.05
        per_tick = max(1, round(len(nodes) * tick / args.heartbeat_s))
        position = 0
        next_at = time.monotonic()
        while True:
            for _ in range(per_tick):
                await relay.changed(nodes[position][0], hb)
                position = (position + 1) % len(nodes)
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    beats = asyncio.create_task(beat())

    async def stats(_: list[str]) -> dict[str, Any]:
        return {"out_msgs": bus.client.stats["out_msgs"], "in_msgs": bus.client.stats["in_msgs"]}

    try:
        await serve_commands({"stats": stats})
    finally:
        beats.cancel()
        await relay.stop()
        await bus.close()


# --- job plane ------------------------------------------------------------------------


class InstantEngine:
    """BENCHMARK ONLY: ``max_tokens`` one-token deltas at once; no model, no inference."""

    kind = "instant"

    def __init__(self, slots: int, tokens: int) -> None:
        self.slots = slots
        self.tokens = tokens
        self.active = 0

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(name=INSTANT_MODEL, sha256="0" * 64, engine=self.kind, slots=self.slots)]

    def load(self) -> EngineLoad:
        return EngineLoad(
            free_slots=max(0, self.slots - self.active),
            queue_depth=max(0, self.active - self.slots),
            tokens_per_s=1000.0,
        )

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[EngineEvent, None]:
        n = request.params.max_tokens or self.tokens
        self.active += 1
        try:
            for i in range(n):
                yield Delta(WORDS[i % len(WORDS)])
            yield Finish("length", Usage(5, n))
        finally:
            self.active -= 1

    async def close(self) -> None:
        pass


async def tracker(args: argparse.Namespace) -> None:
    """A real tracker on the bus, with its own gateway on the same port (no bus hop)."""
    from lichen.tracker.admission import OwnerAdmission
    from lichen.tracker.registry import Registry
    from lichen.tracker.service import NODE_PATH, TrackerService

    owner = load_identity(args.owner)
    bus = await Bus.connect(args.nats, name="bench-tracker")
    registry = Registry()
    relay = TrackerRelay(bus, subjects_of(args.owner), registry)
    service = TrackerService(
        network_key=owner.network_key,
        admission=OwnerAdmission(owner.account_public),
        registry=registry,
        relay=relay,
    )
    gateway = build_gateway(GatewayOptions(timeout_s=120.0), registry=registry)
    gateway.app.add_api_websocket_route(NODE_PATH, service.endpoint)
    await relay.start()
    await service.start()
    http = HttpServer(gateway.app, host="127.0.0.1", port=0)
    port = await http.start()
    say("ready", port=port, path=NODE_PATH)

    async def stats(_: list[str]) -> dict[str, Any]:
        return {"nodes": len(registry), "open_jobs": relay.open_jobs}

    try:
        await serve_commands({"stats": stats})
    finally:
        await relay.stop()
        await service.stop()
        await http.stop()
        await bus.close()


async def nodes(args: argparse.Namespace) -> None:
    """``--nodes`` real node agents, each with its own identity and an instant engine."""
    from lichen.node.agent import NodeAgent, NodeConfig

    owner = load_identity(args.owner)
    agents: list[NodeAgent] = []
    for i in range(args.nodes):
        node_dir = args.owner.parent / f"instant{i}"
        (node_dir / KEYS_DIR).mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy2(args.owner / KEYS_DIR / "account.key", node_dir / KEYS_DIR / "account.key")
        identity = load_identity(node_dir, node_name=f"instant{i}")
        config = NodeConfig(
            tracker_url=args.tracker_url, name=f"instant{i}", network_key=owner.network_public
        )
        agents.append(NodeAgent(identity, InstantEngine(args.slots, args.tokens), config))
    tasks = [asyncio.create_task(a.run()) for a in agents]
    await asyncio.gather(*(a.connected.wait() for a in agents))
    say("ready", nodes=len(agents))
    try:
        await serve_commands({})
    finally:
        for agent in agents:
            await agent.stop()
        await asyncio.gather(*tasks, return_exceptions=True)


async def http_gateway(args: argparse.Namespace) -> None:
    """A gateway process on the bus: the directory, the gateway builder, uvicorn."""
    bus = await Bus.connect(args.nats, name="bench-gateway")
    directory = Directory(bus, subjects_of(args.owner))
    gateway = build_gateway(GatewayOptions(timeout_s=120.0), registry=directory.registry)
    await directory.start()
    http = HttpServer(gateway.app, host="127.0.0.1", port=0)
    port = await http.start()
    await until(lambda: len(directory.registry) >= args.nodes, every_s=0.02)
    say("ready", port=port)
    try:
        await serve_commands({})
    finally:
        await directory.stop()
        await http.stop()
        await bus.close()


ROLES = {
    "dir-gateway": dir_gateway,
    "sim-tracker": sim_tracker,
    "tracker": tracker,
    "nodes": nodes,
    "gateway": http_gateway,
}


def main() -> None:
    parser = argparse.ArgumentParser(description="a child of bench/cluster_scale.py")
    parser.add_argument("--role", choices=sorted(ROLES), required=True)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--owner", type=Path, required=True, help="the network owner's data dir")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--heartbeat-s", type=float, default=1.0)
    parser.add_argument("--announce-rate", type=float, default=0.0, help="nodes/s; 0: at once")
    parser.add_argument("--tracker-url", default="")
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    run(ROLES[args.role](args))


if __name__ == "__main__":
    main()
