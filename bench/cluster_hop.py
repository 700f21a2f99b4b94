"""The cluster hop: a gateway process on NATS vs the tracker's own gateway vs the engine.

One ``lichen tracker`` (with its gateway) on a NATS bus, one ``lichen node`` process
joined to it, and one ``lichen gateway`` process that holds no node links: its jobs
travel gateway -> NATS -> tracker -> node and the tokens come back the same way. The
same greedy prompts run one at a time, rotating through three paths:

- ``direct``: the llama.cpp engine in this process (the reference);
- ``tracker``: client -> tracker process (its gateway) -> node process;
- ``cluster``: client -> gateway process -> NATS -> tracker process -> node process.

Targets (issue 12): the extra hop (cluster vs tracker) adds <= 2 ms to TTFT (p50, paired)
and the cluster path keeps decode tokens/s >= 0.95 of the engine's.

Before each prompt's measured runs, both the direct engine and the node see it once
(one token, not measured), so every measured run finds the prompt's prefix cached.

The processes share one SQLite file for accounts and the ledger (a cluster on several
machines uses PostgreSQL; the hop does not touch the database).

    .venv/bin/python bench/cluster_hop.py --reps 5 --tokens 128 --threads 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from _net import BenchNetwork, Proc, free_port
from network_path import CpuPerToken
from overhead import (
    PROMPTS,
    Run,
    add_engine_args,
    conditions,
    direct_engine,
    path_stats,
    pct,
    resolve_model,
    run_direct,
    run_http,
    stats_table,
)

RATIO_TARGET = 0.95
HOP_TARGET_MS = 2.0
PATHS = ("direct", "tracker", "cluster")


def start_nats(root: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "nats-server"
    if not exe.exists():
        found = shutil.which("nats-server")
        if found is None:
            sys.exit("nats-server not found: scripts/install.sh --cluster")
        exe = Path(found)
    port = free_port()
    log = (root / "nats.log").open("wb")
    popen = subprocess.Popen(
        [str(exe), "-a", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    os.environ["BENCH_NATS_URL"] = f"nats://127.0.0.1:{port}"
    return popen


def start_gateway(net: BenchNetwork, tracker: Proc) -> tuple[Proc, str]:
    """A ``lichen gateway`` with the tracker's network keys, ready when it sees the node."""
    data_dir = net.root / "gateway"
    data_dir.mkdir(mode=0o700)
    shutil.copytree(tracker.data_dir / "keys", data_dir / "keys")
    port = free_port()
    proc = net._spawn("gateway", ["gateway", "--port", str(port)], data_dir)
    url = f"http://127.0.0.1:{port}"

    def sees_the_node() -> bool:
        try:
            return httpx.get(url + "/health", timeout=5, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    net._wait(sees_the_node, proc, "the gateway")
    return proc, url


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_engine_args(parser)
    parser.add_argument("--reps", type=int, default=5, help="repetitions of the prompt set")
    parser.set_defaults(tokens=128, parallel=4, ctx_size=4096)
    args = parser.parse_args()
    args.batch_threads = args.batch_threads or args.threads
    model = resolve_model(args.model, args.models_dir)
    print(
        conditions(
            args,
            model,
            {
                "topology": "bench client -> {tracker's gateway | lichen gateway -> NATS} -> "
                "lichen tracker -> lichen node, separate processes on loopback",
                "workload": f"{len(PROMPTS)} chat prompts x {args.reps} reps, greedy, "
                f"max_tokens {args.tokens}, one request at a time, paths rotating",
            },
        ),
        flush=True,
    )
    net = BenchNetwork(
        models_dir=args.models_dir,
        threads=args.threads,
        parallel=args.parallel,
        ctx_size=args.ctx_size,
    )
    runs: dict[str, list[Run]] = {path: [] for path in PATHS}
    with net:
        nats = start_nats(net.root)
        try:
            net.extra = {
                "LICHEN_NATS_URL": os.environ["BENCH_NATS_URL"],
                "LICHEN_DATABASE_URL": f"sqlite+aiosqlite:///{net.root / 'shared.db'}",
            }
            tracker = net.start_tracker()
            net.start_node("node0")
            gateway, gateway_url = start_gateway(net, tracker)
            cpu = CpuPerToken({"gateway": gateway.popen.pid, "tracker": tracker.popen.pid})
            await measure(args, net.url, gateway_url, runs, cpu)
        finally:
            nats.terminate()
            nats.wait(10)
    print(report(runs))
    print(cpu.report() + " (cluster path only)")


async def measure(
    args: argparse.Namespace,
    tracker_url: str,
    gateway_url: str,
    runs: dict[str, list[Run]],
    cpu: CpuPerToken,
) -> None:
    engine_opts = {
        "threads": args.threads,
        "batch_threads": args.batch_threads,
        "parallel": args.parallel,
        "ctx_size": args.ctx_size,
    }
    installed = resolve_model(args.model, args.models_dir)
    model = installed.name
    async with (
        direct_engine(installed, **engine_opts) as engine,
        httpx.AsyncClient(base_url=tracker_url, timeout=300, trust_env=False) as via_tracker,
        httpx.AsyncClient(base_url=gateway_url, timeout=300, trust_env=False) as via_cluster,
    ):
        await run_direct(engine, model, PROMPTS[0], 8)  # warm-up, not measured
        await run_http(via_tracker, model, PROMPTS[0], 8)
        await run_http(via_cluster, model, PROMPTS[0], 8)
        turn = 0
        for rep in range(args.reps):
            for prompt in PROMPTS:
                # Both engines hold the prompt's prefix before any measured run (the node's
                # prompt cache would otherwise favour whichever path comes second).
                await run_direct(engine, model, prompt, 1)
                await run_http(via_tracker, model, prompt, 1)
                order = PATHS[turn % 3 :] + PATHS[: turn % 3]  # rotate who goes first
                turn += 1
                for path in order:
                    if path == "direct":
                        run = await run_direct(engine, model, prompt, args.tokens)
                    elif path == "tracker":
                        run = await run_http(via_tracker, model, prompt, args.tokens)
                    else:
                        before = cpu.sample()
                        run = await run_http(via_cluster, model, prompt, args.tokens)
                        cpu.add(before, run.tokens)
                    runs[path].append(run)
            print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr, flush=True)


def report(runs: dict[str, list[Run]]) -> str:
    stats = path_stats(runs)
    rows = stats_table(stats)
    d, c = stats["direct"], stats["cluster"]
    ratio = c["tps_p50"] / d["tps_p50"]
    # Paired: each cluster run against the tracker run of the same prompt and repetition.
    pairs = list(zip(runs["tracker"], runs["cluster"], strict=True))
    hop = pct([(b.ttft_s - a.ttft_s) * 1000 for a, b in pairs], 50)
    tracker_ratio = stats["tracker"]["tps_p50"] / d["tps_p50"]
    rows += [
        "",
        f"decode tok/s ratio cluster/direct (p50): {ratio:.3f}   target >= {RATIO_TARGET}  "
        f"{'MET' if ratio >= RATIO_TARGET else 'MISSED'}",
        f"decode tok/s ratio tracker/direct (p50): {tracker_ratio:.3f}   (no bus hop, reference)",
        f"TTFT added by the bus hop (p50 of paired cluster - tracker): {hop:+.2f} ms   "
        f"target <= {HOP_TARGET_MS:g} ms  {'MET' if hop <= HOP_TARGET_MS else 'MISSED'}",
        f"load avg at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"finished {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    asyncio.run(main())
