"""Tracker scale: many simulated node connections on one tracker.

The tracker is the real one (``TrackerService`` with ``InviteAdmission`` on SQLite,
the registry, the scheduler, the ``/v1/node/connect`` WebSocket endpoint on
uvicorn) running in this process. The nodes are BENCHMARK-ONLY SIMULATED NODES:
a second process opens ``--nodes`` WebSocket connections and, on each, runs the
real handshake (device certificate, Ed25519 nonce signatures), sends a real
signed manifest and then a heartbeat every ``--heartbeat-s`` seconds. They run
no engine and never receive jobs (the benchmark only schedules, it never starts
a job on them).

Measured in the tracker process:

- memory per connected node: RSS growth from before the first connection to all
  connected, divided by the number of nodes;
- heartbeat CPU: this process's CPU time over a window of steady heartbeats,
  per heartbeat and as a share of one core;
- scheduling decision time: ``resolve_model`` + ``candidates`` for a model that
  every node serves (the worst case), timed one by one while heartbeats flow;
- how long the watchdog and socket handling take to drop every node when the
  simulated-node process is killed.

    .venv/bin/python bench/tracker_scale.py --nodes 10000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import logging
import os
import pstats
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import cpu_model, pct

MODELS = ["bench-model", "bench-a", "bench-b", "bench-c", "bench-d"]
TARGET_P99_MS = 1.0


def raise_fd_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --- the simulated nodes (a separate process) -------------------------------------------


async def simulated_nodes(args: argparse.Namespace) -> None:
    """BENCHMARK ONLY: N connections that handshake, send a manifest, then heartbeat."""
    from websockets.asyncio.client import connect

    from lichen.identity.certs import issue_device_certificate
    from lichen.identity.keys import load_key
    from lichen.identity.signing import generate_key, peer_id, public_raw
    from lichen.identity.store import now_ms
    from lichen.transport.handshake import client_handshake
    from lichen.transport.link import ClientLink
    from lichen.wire.manifest import sign_manifest
    from lichen.wire.messages import Hardware, Heartbeat, ModelInfo

    account = load_key(Path(args.account_key))
    network = bytes.fromhex(args.network_key)
    hardware = Hardware(cpu="simulated", cores=8, ram_mb=16384)
    gate = asyncio.Semaphore(args.concurrency)
    joined = 0
    dropped = 0

    async def one(index: int) -> None:
        nonlocal joined, dropped
        device = generate_key()
        cert = issue_device_certificate(
            account, public_raw(device), name=f"sim{index}", now_ms=now_ms()
        )
        models = [
            ModelInfo(name=MODELS[0], sha256="0" * 64, engine="sim", slots=4),
            ModelInfo(name=MODELS[1 + index % 4], sha256="1" * 64, engine="sim", slots=4),
        ]
        first = True
        while True:  # like a real node: redial when the tracker drops the link
            try:
                async with gate:
                    conn = await connect(
                        args.url, compression=None, ping_interval=None, proxy=None, open_timeout=60
                    )
                    link = ClientLink(conn)
                    welcome, _ = await client_handshake(
                        link,
                        device_key=device,
                        device_certificate=cert,
                        expected_network_key=network,
                    )
                    await link.send(
                        sign_manifest(
                            device,
                            name=f"sim{index}",
                            peer_id=peer_id(public_raw(device)),
                            models=models,
                            engines=["sim"],
                            hardware=hardware,
                        )
                    )
                if first:
                    first = False
                    joined += 1
                    if joined % 1000 == 0 or joined == args.nodes:
                        print(f"joined {joined}", flush=True)
                await asyncio.sleep(random.random() * welcome.heartbeat_s)  # spread the beats
                beat = Heartbeat(free_slots=4, queue_depth=0, tokens_per_s=50.0)
                while True:
                    await link.send(beat)
                    await asyncio.sleep(welcome.heartbeat_s)
            except Exception as exc:  # dropped or refused: wait 1-2 s, then redial
                dropped += 1
                if args.verbose and dropped <= 5:
                    print(f"sim{index}: {type(exc).__name__}: {exc}", flush=True)
                await asyncio.sleep(1.0 + random.random())

    await asyncio.gather(*(one(i) for i in range(args.nodes)))


def spawn_simulated_nodes(
    args: argparse.Namespace, port: int, key_file: Path, network_key: str
) -> list[subprocess.Popen[bytes]]:
    """``--procs`` simulator processes sharing ``--nodes`` between them."""
    from lichen.tracker.service import NODE_PATH

    procs = []
    for i in range(args.procs):
        share = args.nodes // args.procs + (1 if i < args.nodes % args.procs else 0)
        argv = [sys.executable, __file__, "--client", "--url", f"ws://127.0.0.1:{port}{NODE_PATH}"]
        argv += ["--account-key", str(key_file), "--network-key", network_key]
        argv += ["--nodes", str(share), "--concurrency", str(args.concurrency)]
        argv += ["--loop", args.loop] + (["--verbose"] if args.verbose else [])
        procs.append(
            subprocess.Popen(
                argv,
                stdout=None if args.verbose else subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    return procs


class _Counter(logging.Handler):
    """Counts log records containing ``needle`` (bench-only instrumentation)."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.WARNING)
        self.needle = needle
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.count += 1


# --- the tracker (this process) ---------------------------------------------------------


async def tracker_side(args: argparse.Namespace) -> None:
    from fastapi import FastAPI

    from lichen.identity.store import load_identity, now_ms
    from lichen.reputation.book import EwmaReputation
    from lichen.routing.scheduler import Scheduler
    from lichen.server import HttpServer
    from lichen.storage.engine import create_engine, migrate
    from lichen.storage.membership import MembershipRepository
    from lichen.tracker.api import mount_tracker
    from lichen.tracker.connection import NodeConnection
    from lichen.tracker.membership import AdmissionLimiter, InviteAdmission, SeenBuffer
    from lichen.tracker.service import TrackerService
    from lichen.transport.handshake import Peer

    fd_limit = raise_fd_limit()
    tmp = Path(tempfile.mkdtemp(prefix="lichen-scale-"))
    identity = load_identity(tmp / "tracker")
    url = f"sqlite+aiosqlite:///{tmp / 'lichen.db'}"
    await migrate(url)
    db = create_engine(url)
    members = MembershipRepository(db)
    seen = SeenBuffer(members)  # as lichen.roles.tracker wires it

    async def left(peer: Peer) -> None:
        seen.note(peer.peer_id, now_ms())

    admission = InviteAdmission(
        members,
        network_key=identity.network_public,
        owner_account=identity.account_public,
        mode="private",
        limiter=AdmissionLimiter(10),
        seen=seen,
    )
    tracker = TrackerService(
        network_key=identity.network_key,
        admission=admission,
        heartbeat_s=args.heartbeat_s,
        on_leave=left,
    )
    seen_task = asyncio.create_task(seen.run())
    reputation = EwmaReputation()
    scheduler = Scheduler(tracker.registry, reputation)
    app = FastAPI()
    mount_tracker(app, tracker, reputation)
    await tracker.start()
    http = HttpServer(app, host="127.0.0.1", port=0)
    port = await http.start()

    # Bench-only instrumentation: count heartbeats as the real handler receives them,
    # and links the watchdog drops (heartbeats too late: the tracker is overloaded).
    drops = _Counter("missed its heartbeats")
    logging.getLogger("lichen.tracker.service").addHandler(drops)
    beats = 0
    handler = NodeConnection._on_heartbeat

    async def counting(self: NodeConnection, msg: object) -> None:
        nonlocal beats
        beats += 1
        await handler(self, msg)  # type: ignore[arg-type]

    NodeConnection._on_heartbeat = counting  # type: ignore[method-assign]

    load = os.getloadavg()
    print(
        f"date          {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
        f"cpu           {cpu_model()} x {os.cpu_count()} logical cores\n"
        f"load avg      {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (at start)\n"
        f"tracker       TrackerService + InviteAdmission (SQLite) + uvicorn, this process; "
        f"fd limit {fd_limit}\n"
        f"nodes         {args.nodes} simulated (benchmark-only, no engine) in {args.procs} "
        f"other process(es), heartbeat every {args.heartbeat_s:g} s, each serving "
        f"{MODELS[0]} + one of 4 others",
        flush=True,
    )
    gc.collect()
    rss_before = rss_mb()
    key_file = tmp / "tracker" / "keys" / "account.key"
    clients = spawn_simulated_nodes(args, port, key_file, identity.network_public.hex())
    try:
        started, join_cpu = time.monotonic(), time.process_time()
        while len(tracker.registry) < args.nodes:
            if any(c.poll() is not None for c in clients):
                raise RuntimeError("the simulated-node process exited early")
            if time.monotonic() - started > args.join_timeout:
                raise RuntimeError(f"only {len(tracker.registry)} nodes joined")
            await asyncio.sleep(0.5)
        join_s = time.monotonic() - started
        join_cpu = time.process_time() - join_cpu
        print(
            f"joined        {args.nodes} nodes in {join_s:.1f} s ({args.nodes / join_s:.0f} "
            f"handshakes/s; tracker CPU {1000 * join_cpu / args.nodes:.1f} ms per join; "
            f"{drops.count} links dropped by the watchdog meanwhile)",
            flush=True,
        )
        await asyncio.sleep(args.settle)  # heartbeats reach their steady rhythm
        gc.collect()
        rss_after = rss_mb()

        beats_before, cpu_before, wall_before = beats, time.process_time(), time.monotonic()
        drops_before = drops.count
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        await asyncio.sleep(args.window)
        if profiler is not None:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        cpu = time.process_time() - cpu_before
        wall = time.monotonic() - wall_before
        drops_in_window = drops.count - drops_before
        counted = beats - beats_before
        connected = len(tracker.registry)

        timings: list[float] = []  # wall clock, ms (includes being preempted by the OS)
        cpu_timings: list[float] = []  # this thread's CPU time, ms (the decision's own cost)
        for batch in range(args.decisions // 100):
            for _ in range(100):
                c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
                model = scheduler.resolve_model(MODELS[0])
                chosen = scheduler.candidates(model)
                timings.append((time.perf_counter_ns() - t0) / 1e6)
                cpu_timings.append((time.thread_time_ns() - c0) / 1e6)
                assert chosen
            await asyncio.sleep(0.001)  # let heartbeats in between batches
            if batch % 20 == 0:
                reputation.job_succeeded(chosen[0].peer_id, 0.2)  # some history to score
        auto = []
        for _ in range(1000):
            t0 = time.perf_counter_ns()
            scheduler.candidates(scheduler.resolve_model("auto"))
            auto.append((time.perf_counter_ns() - t0) / 1e6)

        # Every link drops at once (as after a tracker restart); the nodes, now known
        # members, reconnect 1-2 s later: how long until all are back?
        await seen.flush()
        admission = InviteAdmission(  # a restarted tracker: members preloaded from the DB
            members,
            network_key=identity.network_public,
            owner_account=identity.account_public,
            mode="private",
            seen=seen,
        )
        await admission.preload()
        tracker.admission = admission
        dropped_at, rejoin_cpu = time.monotonic(), time.process_time()
        for conn in tracker.registry:
            tracker.registry.remove(conn)  # as a fresh tracker would: nobody registered
            conn.lost()
            await conn.link.close(1012, "bench: simulated restart")
        await tracker.wait_for_nodes(args.nodes, timeout=600)
        rejoin_s = time.monotonic() - dropped_at
        rejoin_cpu = time.process_time() - rejoin_cpu
        rejoined = len(tracker.registry)

        for c in clients:
            c.kill()
        for c in clients:
            c.wait()
        killed = time.monotonic()
        while len(tracker.registry):
            await asyncio.sleep(0.05)
            if time.monotonic() - killed > 60:
                break
        drop_s = time.monotonic() - killed
        left = len(tracker.registry)
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.wait()
        NodeConnection._on_heartbeat = handler  # type: ignore[method-assign]
        seen_task.cancel()
        await tracker.stop()
        await http.stop()
        await seen.flush()
        await db.dispose()

    per_node_kb = (rss_after - rss_before) * 1024 / args.nodes
    p99 = pct(timings, 99)
    print(
        f"\nmemory        RSS {rss_before:.0f} MB -> {rss_after:.0f} MB with {args.nodes} "
        f"nodes: {per_node_kb:.1f} KB per connected node\n"
        f"heartbeats    {counted} in {wall:.1f} s ({counted / wall:.0f}/s; nodes still "
        f"connected {connected}/{args.nodes}, {drops_in_window} dropped); "
        f"tracker CPU {cpu:.2f} s = "
        f"{100 * cpu / wall:.0f}% of one core, {1e6 * cpu / max(counted, 1):.0f} us per heartbeat\n"
        f"scheduling    resolve_model + candidates over {args.nodes} nodes serving the model, "
        f"{len(timings)} decisions: p50 {pct(timings, 50) * 1000:.0f} us, "
        f"p99 {p99 * 1000:.0f} us, max {max(timings) * 1000:.0f} us   target p99 < "
        f"{TARGET_P99_MS:g} ms  {'MET' if p99 < TARGET_P99_MS else 'MISSED'}\n"
        f"              CPU time per decision: p50 {pct(cpu_timings, 50) * 1000:.0f} us, "
        f"p99 {pct(cpu_timings, 99) * 1000:.0f} us\n"
        f"auto model    p50 {pct(auto, 50) * 1000:.0f} us, p99 {pct(auto, 99) * 1000:.0f} us\n"
        f"reconnect     all links closed at once: {rejoined}/{args.nodes} known nodes back "
        f"after {rejoin_s:.1f} s (they wait 1-2 s before redialling; tracker CPU "
        f"{1000 * rejoin_cpu / max(rejoined, 1):.1f} ms per rejoin)\n"
        f"node loss     all {args.nodes} simulated nodes killed: registry empty after "
        f"{drop_s:.2f} s ({left} left)\n"
        f"load avg at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--heartbeat-s", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes in flight")
    parser.add_argument("--procs", type=int, default=1, help="simulated-node processes")
    parser.add_argument("--window", type=float, default=10.0, help="heartbeat CPU window, s")
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--decisions", type=int, default=10_000)
    parser.add_argument("--join-timeout", type=float, default=600.0)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the heartbeat window")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    # the simulated-node process
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--account-key", help=argparse.SUPPRESS)
    parser.add_argument("--network-key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        if args.client:
            raise_fd_limit()
            runner.run(simulated_nodes(args))
        else:
            runner.run(tracker_side(args))


if __name__ == "__main__":
    main()
