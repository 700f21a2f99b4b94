"""The network path: gateway -> tracker -> a remote node process, vs the engine called directly.

Unlike ``bench/overhead.py`` (``lichen up``: tracker, gateway and node in one
process), the node here is its own ``lichen node`` process that joined a
``lichen tracker`` process by invite, as on a real network: every token crosses
llama.cpp -> node agent -> WebSocket -> tracker process -> router -> gateway ->
SSE -> client. A third path is llama.cpp's own HTTP server with the same settings
(the like-for-like baseline: its socket and client cost the same). The same prompts,
greedy, taking turns (never at the same time) on the three paths. Targets: decode
tokens/s ratio >= 0.95, TTFT added <= 10 ms.

    .venv/bin/python bench/network_path.py --reps 5 --tokens 128 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from pathlib import Path

import httpx

from _net import BenchNetwork
from overhead import (
    PROMPTS,
    Run,
    add_engine_args,
    compare,
    conditions,
    direct_engine,
    llama_server,
    path_stats,
    resolve_model,
    run_direct,
    run_http,
    stats_table,
    take_turns,
    warm_up,
)

RATIO_TARGET = 0.95
TTFT_TARGET_MS = 10.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_engine_args(parser)
    parser.add_argument("--reps", type=int, default=5, help="repetitions of the prompt set")
    parser.set_defaults(tokens=128, parallel=4, ctx_size=4096)
    args = parser.parse_args()
    args.batch_threads = args.batch_threads or args.threads
    models_dir: Path = args.models_dir
    model = resolve_model(args.model, models_dir)
    print(
        conditions(
            args,
            model,
            {
                "topology": "bench client -> lichen tracker (gateway) process -> "
                "lichen node process (joined by invite), all on loopback",
                "workload": f"{len(PROMPTS)} chat prompts x {args.reps} reps, greedy, "
                f"max_tokens {args.tokens}, one request at a time, the three paths taking turns",
            },
        ),
        flush=True,
    )
    runs: dict[str, list[Run]] = {"direct": [], "server": [], "network": []}
    net = BenchNetwork(
        models_dir=models_dir, threads=args.threads, parallel=args.parallel, ctx_size=args.ctx_size
    )
    engine_opts = {
        "threads": args.threads,
        "batch_threads": args.batch_threads,
        "parallel": args.parallel,
        "ctx_size": args.ctx_size,
    }
    with net, llama_server(model, **engine_opts) as server_url:
        tracker = net.start_tracker()
        node = net.start_node("node0")
        cpu = CpuPerToken({"tracker": tracker.popen.pid, "node (all threads)": node.popen.pid})
        async with (
            direct_engine(model, **engine_opts) as engine,
            httpx.AsyncClient(base_url=net.url, timeout=300, trust_env=False) as client,
            httpx.AsyncClient(base_url=server_url, timeout=300, trust_env=False) as server,
        ):

            async def one(path: str, prompt: str, tokens: int) -> Run:
                if path == "direct":
                    return await run_direct(engine, model.name, prompt, tokens)
                if path == "server":
                    return await run_http(server, model.name, prompt, tokens)
                before = cpu.sample()
                run = await run_http(client, model.name, prompt, tokens)
                cpu.add(before, run.tokens)
                return run

            await warm_up(runs, one)
            cpu.reset()  # the warm-up is not measured
            await take_turns(runs, one, reps=args.reps, tokens=args.tokens)
    print(report(runs))
    print(cpu.report())


class CpuPerToken:
    """CPU time the processes on the network path spend per streamed token."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.reset()

    def reset(self) -> None:
        """Count from now on."""
        self.spent: dict[str, float] = dict.fromkeys([*self.pids, "client (this process)"], 0.0)
        self.tokens = 0

    def sample(self) -> dict[str, float]:
        now = {name: _cpu_s(pid) for name, pid in self.pids.items()}
        return now | {"client (this process)": time.process_time()}

    def add(self, before: dict[str, float], tokens: int) -> None:
        after = self.sample()
        for name in self.spent:
            self.spent[name] += after[name] - before[name]
        self.tokens += tokens

    def report(self) -> str:
        parts = [
            f"{name} {1e6 * spent / max(self.tokens, 1):.0f} us"
            for name, spent in self.spent.items()
        ]
        return "CPU per token on the network path (schedstat): " + ", ".join(parts)


def _cpu_s(pid: int) -> float:
    """On-CPU time of all of a process's threads, from the scheduler (ns precision)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError):
            total += int(stat.read_text().split()[0])
    return total / 1e9


def report(runs: dict[str, list[Run]]) -> str:
    rows = stats_table(path_stats(runs))
    for base in ("direct", "server"):
        rows += compare(
            runs, base, "network", ratio_target=RATIO_TARGET, ttft_target_ms=TTFT_TARGET_MS
        )
    rows.append(f"load avg at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return "\n".join(rows)


if __name__ == "__main__":
    asyncio.run(main())
