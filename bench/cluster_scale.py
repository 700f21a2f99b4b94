"""Cluster scale: gateways and trackers on a real NATS server (issue 12).

Part 1, the directory: one SIMULATED tracker process (the real ``TrackerRelay``
announcing BENCHMARK-ONLY simulated nodes: real device certificates from the network
owner's account key and real signed manifests, but no link and no engine) publishes
``--nodes`` NodeUps, then every node's heartbeat once per ``--heartbeat-s``. One real
gateway process (``Directory`` + ``build_gateway``) holds them. Measured: time until
the gateway holds every node; gateway RSS per node; gateway, tracker and nats-server
CPU per forwarded heartbeat; scheduling decisions (``resolve_model`` + ``candidates``
over the directory's registry) p50/p99 while heartbeats flow; then a second gateway
joins (a Sync: the tracker re-announces every node) and how long it takes.

Part 2, the job plane: one real tracker process (``TrackerService`` + relay, and its
own in-process gateway), ``--job-nodes`` real ``NodeAgent``s in one process with a
BENCHMARK-ONLY INSTANT ENGINE (``max_tokens`` one-token deltas, no delay, no model),
and 1, then 2 gateway processes on the bus. This process is the load generator:
``--streams`` concurrent streamed chat completions. For each configuration:
requests/s, streamed tokens/s per gateway and per tracker process, and CPU seconds
per 1,000 streamed tokens of every process (from /proc), including nats-server and
the load generator. The first configuration is today's single process (clients ->
the tracker's own gateway, no bus) for comparison.

    .venv/bin/python bench/cluster_scale.py             # full (a few minutes on 2 cores)
    .venv/bin/python bench/cluster_scale.py --quick     # 1,000 nodes, short windows
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _procs import Child, cpu_s, nats_version, slow_consumers, start_nats, stop_proc
from _report import cpu_model, pct
from _stream_load import stream_load

TARGET_P99_US = 1000.0
INSTANT_MODEL = "bench-instant"


def conditions(args: argparse.Namespace) -> None:
    load = os.getloadavg()
    commit = subprocess.run(
        ["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    versions = ", ".join(
        f"{p} {importlib.metadata.version(p)}" for p in ("nats-py", "uvloop", "uvicorn", "httpx")
    )
    print(
        f"date          {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
        f"cpu           {cpu_model()} x {os.cpu_count()} logical cores\n"
        f"load avg      {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (at start)\n"
        f"software      Python {sys.version.split()[0]}, {nats_version()}, {versions}, "
        f"lichen {commit or '?'} (+ working tree)\n"
        f"directory     {args.nodes} simulated nodes (benchmark-only), heartbeat every "
        f"{args.heartbeat_s:g} s\n"
        f"job plane     {args.job_nodes} node agents with an instant engine (benchmark-only), "
        f"{args.slots} slots each; {args.streams} concurrent streams x {args.tokens} tokens; "
        f"gateway processes: {' then '.join(map(str, args.gateways))}",
        flush=True,
    )


def _rate(per_s: float) -> str:
    return f"paced at {per_s:g}/s" if per_s else "all at once"


def owner_dir(root: Path, name: str) -> Path:
    from lichen.identity.store import load_identity

    path = root / name / "owner"
    load_identity(path)  # creates the network's owner keys
    return path


# --- part 1: the directory ------------------------------------------------------------


def directory_part(args: argparse.Namespace, root: Path, nats_url: str, nats_pid: int) -> None:
    owner = owner_dir(root, "directory")
    base = ["--nats", nats_url, "--owner", str(owner), "--nodes", str(args.nodes)]
    children: list[Child] = []
    try:
        gw = Child("dir-gateway-1", ["--role", "dir-gateway", *base], root)
        children.append(gw)
        rss0 = gw.expect("ready", 60)["rss_mb"]
        trk = Child(
            "sim-tracker",
            [
                *("--role", "sim-tracker", *base, "--heartbeat-s", str(args.heartbeat_s)),
                *("--announce-rate", str(args.announce_rate)),
            ],
            root,
        )
        children.append(trk)
        signed = trk.expect("signed", 60 + args.nodes * 0.01)
        print(f"\nsigned        {args.nodes} certificates + manifests in {signed['seconds']:.1f} s")
        cpu0 = {c.name: c.cpu_s() for c in children} | {"nats": cpu_s(nats_pid)}
        announcing = trk.expect("announcing", 60)["at"]
        held = gw.expect("holding", args.join_timeout)
        announced = trk.expect("announced", 60)["at"]
        cpu1 = {c.name: c.cpu_s() for c in children} | {"nats": cpu_s(nats_pid)}
        join = {k: cpu1[k] - cpu0[k] for k in cpu0}
        print(
            f"join          gateway holds all {args.nodes} nodes {held['at'] - announcing:.2f} s "
            f"after the first NodeUp (the tracker announced them in "
            f"{announced - announcing:.2f} s, {_rate(args.announce_rate)}); "
            f"CPU per announced node: gateway "
            f"{1e6 * join['dir-gateway-1'] / args.nodes:.0f} us (verifies certificate + "
            f"manifest), tracker {1e6 * join['sim-tracker'] / args.nodes:.0f} us, nats-server "
            f"{1e6 * join['nats'] / args.nodes:.0f} us",
            flush=True,
        )
        time.sleep(args.settle)
        rss1 = gw.ask("rss")["rss_mb"]
        print(
            f"memory        gateway RSS {rss0:.0f} MB -> {rss1:.0f} MB: "
            f"{(rss1 - rss0) * 1024 / args.nodes:.1f} KB per node",
            flush=True,
        )

        s0, t0 = gw.ask("stats"), time.monotonic()
        c0 = {c.name: c.cpu_s() for c in children} | {"nats": cpu_s(nats_pid)}
        time.sleep(args.window)
        s1, t1 = gw.ask("stats"), time.monotonic()
        c1 = {c.name: c.cpu_s() for c in children} | {"nats": cpu_s(nats_pid)}
        wall = t1 - t0
        beats = max(1, s1["in_msgs"] - s0["in_msgs"])
        cpu = {k: c1[k] - c0[k] for k in c0}
        print(
            f"heartbeats    {beats / wall:.0f}/s reached the gateway "
            f"({args.nodes / args.heartbeat_s:.0f}/s sent); {s1['fresh']}/{s1['nodes']} "
            f"nodes fresh (< 5 s) at the end; the gateway took the tracker for dead "
            f"{s1['tracker_drops']} times, NATS reconnects {s1['reconnects']}\n"
            f"              CPU per forwarded heartbeat: gateway "
            f"{1e6 * cpu['dir-gateway-1'] / beats:.0f} us "
            f"({100 * cpu['dir-gateway-1'] / wall:.0f}% of a core), tracker "
            f"{1e6 * cpu['sim-tracker'] / beats:.0f} us "
            f"({100 * cpu['sim-tracker'] / wall:.0f}%), "
            f"nats-server {1e6 * cpu['nats'] / beats:.0f} us ({100 * cpu['nats'] / wall:.0f}%)",
            flush=True,
        )

        decided = gw.ask(f"decide {args.decisions}", 600)
        wall_us, cpu_us = decided["wall_us"], decided["cpu_us"]
        p99 = pct(wall_us, 99)
        print(
            f"scheduling    resolve_model + candidates over {args.nodes} nodes serving the model, "
            f"{len(wall_us)} decisions while heartbeats flow: p50 {pct(wall_us, 50):.0f} us, "
            f"p99 {p99:.0f} us, max {max(wall_us):.0f} us ({decided['candidates']} candidates)"
            f"   target p99 < {TARGET_P99_US / 1000:g} ms  "
            f"{'MET' if p99 < TARGET_P99_US else 'MISSED'}\n"
            f"              CPU time per decision: p50 {pct(cpu_us, 50):.0f} us, "
            f"p99 {pct(cpu_us, 99):.0f} us",
            flush=True,
        )

        # A second gateway joins: it asks for a Sync and the tracker re-announces every
        # node at once (TrackerRelay answers a Sync in one go, unpaced).
        out0, g0 = trk.ask("stats")["out_msgs"], gw.cpu_s()
        t0 = time.monotonic()
        gw2 = Child("dir-gateway-2", ["--role", "dir-gateway", *base], root)
        children.append(gw2)
        gw2.expect("ready", 60)
        try:
            held2: dict[str, Any] | None = gw2.expect("holding", args.sync_timeout)
        except RuntimeError:
            held2 = None
        out1, g1, t1 = trk.ask("stats")["out_msgs"], gw.cpu_s(), time.monotonic()
        beat_rate = args.nodes / args.heartbeat_s + 1
        extra = (out1 - out0) - beat_rate * (t1 - t0)
        state2, state1 = gw2.ask("stats"), gw.ask("stats")
        if held2 is not None:
            took = held2["at"] - held2["started"]
            joined = f"holds all {args.nodes} nodes {took:.2f} s after it asked"
        else:
            joined = f"did NOT hold all nodes within {args.sync_timeout:g} s"
        print(
            f"2nd gateway   {joined} (Sync); the tracker published ~{extra:.0f} messages beyond "
            f"heartbeats meanwhile ({extra / args.nodes:.1f} x the directory); gateway 1 spent "
            f"{g1 - g0:.2f} CPU s in that time\n"
            f"              then: gateway 2 holds {state2['nodes']} ({state2['fresh']} fresh), "
            f"took the tracker for dead {state2['tracker_drops']} times, NATS reconnects "
            f"{state2['reconnects']}; gateway 1 holds {state1['nodes']} ({state1['fresh']} "
            f"fresh), {state1['tracker_drops']} drops, {state1['reconnects']} reconnects; "
            f"nats-server cut off {slow_consumers(root / 'nats.log')} slow consumers",
            flush=True,
        )
    finally:
        for child in reversed(children):
            child.stop()


# --- part 2: the job plane ------------------------------------------------------------


def jobs_part(args: argparse.Namespace, root: Path, nats_url: str, nats_pid: int) -> None:
    owner = owner_dir(root, "jobs")
    base = ["--nats", nats_url, "--owner", str(owner), "--nodes", str(args.job_nodes)]
    children: list[Child] = []
    try:
        trk = Child("tracker", ["--role", "tracker", *base], root)
        children.append(trk)
        ready = trk.expect("ready", 60)
        tracker_http = f"http://127.0.0.1:{ready['port']}"
        node_argv = ["--role", "nodes", *base, "--slots", str(args.slots)]
        node_argv += ["--tracker-url", f"ws://127.0.0.1:{ready['port']}{ready['path']}"]
        nodes = Child("nodes", node_argv, root)
        children.append(nodes)
        nodes.expect("ready", 120)
        gateways: list[str] = []
        for i in range(max(args.gateways)):
            gw = Child(f"gateway-{i + 1}", ["--role", "gateway", *base], root)
            children.append(gw)
            gateways.append(f"http://127.0.0.1:{gw.expect('ready', 60)['port']}")
        procs = {c.name: c.pid for c in children} | {"nats-server": nats_pid}
        procs["load generator"] = os.getpid()
        print(
            f"\njob plane     {args.streams} streams x {args.tokens} tokens, warmup "
            f"{args.warmup:g} s, window {args.job_window:g} s; CPU s per 1,000 streamed tokens "
            f"(share of one core)",
            flush=True,
        )
        if args.latency_window > 0:
            latency(args, tracker_http, gateways[0])
        configs = [("single process, no bus", [tracker_http])]
        configs += [(f"{g} gateway process(es)", gateways[:g]) for g in args.gateways]
        for label, urls in configs:
            run_config(args, label, urls, procs)
    finally:
        for child in reversed(children):
            child.stop()


def latency(args: argparse.Namespace, direct: str, gateway: str) -> None:
    """One stream at a time, the two paths in turns: what the bus hop adds to TTFT."""
    ttft: dict[str, list[float]] = {"single process": [], "via 1 gateway": []}
    rounds = 4
    for _ in range(rounds):
        for label, url in (("single process", direct), ("via 1 gateway", gateway)):
            result = asyncio.run(
                stream_load(
                    [url],
                    model=INSTANT_MODEL,
                    streams=1,
                    max_tokens=args.tokens,
                    warmup_s=0.2,
                    window_s=args.latency_window / rounds / 2,
                    on_window=lambda: None,
                )
            )
            ttft[label] += result.ttft_ms
    a, b = ttft["single process"], ttft["via 1 gateway"]
    print(
        f"\n[one stream at a time, the paths in turns] TTFT p50 single process "
        f"{pct(a, 50):.2f} ms ({len(a)} requests), via a gateway process and the bus "
        f"{pct(b, 50):.2f} ms ({len(b)}): the hop adds {pct(b, 50) - pct(a, 50):+.2f} ms p50",
        flush=True,
    )


def run_config(
    args: argparse.Namespace, label: str, urls: list[str], procs: dict[str, int]
) -> None:
    marks: list[dict[str, float]] = []

    def snapshot() -> None:
        marks.append({name: cpu_s(pid) for name, pid in procs.items()})

    result = asyncio.run(
        stream_load(
            urls,
            model=INSTANT_MODEL,
            streams=args.streams,
            max_tokens=args.tokens,
            warmup_s=args.warmup,
            window_s=args.job_window,
            on_window=snapshot,
        )
    )
    wall, tokens = result.window_s, max(1, result.tokens)
    cpu = {name: marks[1][name] - marks[0][name] for name in procs}
    per_gateway = " / ".join(f"{n / wall:.0f}" for n in result.tokens_by_url.values())
    print(
        f"\n[{label}] {result.requests / wall:.1f} requests/s, {result.tokens / wall:.0f} "
        f"tokens/s in all ({per_gateway} per serving process), TTFT p50 "
        f"{pct(result.ttft_ms, 50):.1f} ms p99 {pct(result.ttft_ms, 99):.1f} ms; "
        f"{result.errors} errors, {result.short} short answers, "
        f"{result.chunks / tokens:.2f} SSE chunks per token"
    )
    busy = sum(cpu.values())
    for name, used in cpu.items():
        if used < 0.005 * wall and not name.startswith("gateway"):
            continue
        print(f"  {name:15} {1000 * used / tokens:6.3f} CPU s ({100 * used / wall:3.0f}%)")
    print(f"  {'all processes':15} {1000 * busy / tokens:6.3f} CPU s ({100 * busy / wall:3.0f}%)")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["all", "directory", "jobs"], default="all")
    parser.add_argument("--quick", action="store_true", help="1,000 nodes, short windows")
    d = parser.add_argument_group("part 1, the directory")
    d.add_argument("--nodes", type=int, default=10_000, help="simulated nodes (default 10000)")
    d.add_argument("--heartbeat-s", type=float, default=1.0, help="per node (default 1)")
    d.add_argument("--window", type=float, default=10.0, help="heartbeat CPU window, s")
    d.add_argument("--settle", type=float, default=3.0, help="s before memory is read")
    d.add_argument("--decisions", type=int, default=10_000)
    d.add_argument(
        "--announce-rate", type=float, default=1000.0, help="NodeUps/s at first (0: at once)"
    )
    d.add_argument("--join-timeout", type=float, default=300.0)
    d.add_argument("--sync-timeout", type=float, default=60.0, help="for the 2nd gateway, s")
    j = parser.add_argument_group("part 2, the job plane")
    j.add_argument("--job-nodes", type=int, default=4, help="instant node agents (default 4)")
    j.add_argument("--slots", type=int, default=16, help="slots per node (default 16)")
    j.add_argument("--streams", type=int, default=32, help="concurrent streams (default 32)")
    j.add_argument("--tokens", type=int, default=64, help="max_tokens per request (default 64)")
    j.add_argument("--gateways", type=int, nargs="+", default=[1, 2], help="default: 1 2")
    j.add_argument("--warmup", type=float, default=2.0)
    j.add_argument(
        "--latency-window", type=float, default=8.0, help="one-stream TTFT comparison, s (0: skip)"
    )
    j.add_argument("--job-window", type=float, default=10.0, help="measuring window, s")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.window, args.settle, args.decisions = 1000, 3.0, 1.0, 2000
        args.warmup, args.job_window, args.latency_window = 1.0, 3.0, 2.0
    conditions(args)
    root = Path(tempfile.mkdtemp(prefix="lichen-cluster-"))
    nats, nats_url = start_nats(root / "nats.log")
    try:
        if args.part in ("all", "directory"):
            directory_part(args, root, nats_url, nats.pid)
        if args.part in ("all", "jobs"):
            jobs_part(args, root, nats_url, nats.pid)
    finally:
        stop_proc(nats)
        if args.keep:
            print(f"logs in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()
    print(f"\nload avg at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
