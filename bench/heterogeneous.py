"""Heterogeneous nodes: a 2-thread and a 1-thread node, alone and together, in one run.

Starts one real network (``lichen tracker`` + ``lichen node`` processes, SmolLM2) and
measures, one phase after the other:

1. ``big`` alone: a node with ``--big-threads`` threads (default 2);
2. ``small`` alone: a node with ``--small-threads`` threads (default 1);
3. ``both``: the two nodes on the network at once (restarted from their data dirs).

In each phase ``--clients`` closed-loop clients per node slot send streaming chat
requests back to back for ``--seconds`` seconds (greedy, ``--tokens`` max tokens,
different prompts). Throughput is completed tokens over the phase's wall time.
Prints each phase's throughput, TTFT p50/p95, how many requests each node served,
and the ratio ``both / (big + small)`` (target >= 0.9).

Threads: on a machine with fewer cores than big + small threads, the two nodes
share cores when together but not when alone, so the ratio is bounded by the
machine, not the scheduler; the conditions line prints the core count.

    .venv/bin/python bench/heterogeneous.py --seconds 40 --tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from _net import BenchNetwork
from _report import pct

PROMPTS = [
    "Tell a long tale about a lighthouse keeper and a storm.",
    "Describe, step by step, how to plant and grow tomatoes.",
    "Write a detailed travel diary of a week in the mountains.",
    "Explain how a steam engine works to a curious child, in detail.",
    "Write a story about a fox who learns to fish.",
    "Describe a busy market in a small town on a Saturday morning.",
    "Explain why the sky is blue, with examples.",
    "Write a letter from a sailor to his family at home.",
]


class HeteroNetwork(BenchNetwork):
    """A bench network whose nodes may get different thread counts."""

    def start_with_threads(self, name: str, threads: int, data_dir: Path | None = None) -> None:
        self.extra = {
            "LICHEN_THREADS": str(threads),
            "LICHEN_BATCH_THREADS": str(threads),
            "LICHEN_OPERATOR_SURFACES": "open",
        }
        self.start_node(name, data_dir)
        self.extra = {"LICHEN_OPERATOR_SURFACES": "open"}


@dataclass
class Phase:
    name: str
    tokens: int = 0  # completion tokens of finished requests
    window_tokens: int = 0  # content chunks (about a token each) received within the phase
    seconds: float = 0.0
    wall_s: float = 0.0
    ttfts: list[float] = field(default_factory=list)
    errors: int = 0
    served: dict[str, int] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        """Tokens streamed within the phase's window, per second of it (the requests still
        running when it ends count up to its end, so a slow node's tail costs nothing)."""
        return self.window_tokens / self.seconds if self.seconds else 0.0


async def one_request(
    client: httpx.AsyncClient, prompt: str, tokens: int, phase: Phase | None = None, end: float = 0
) -> tuple[float, int]:
    body = {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = 0.0
    completion = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            if payload.get("choices") and payload["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                first = first or now
                if phase is not None and now <= end:
                    phase.window_tokens += 1
            if payload.get("usage"):
                completion = int(payload["usage"]["completion_tokens"])
    return (first or time.perf_counter()) - started, completion


async def run_phase(
    net: HeteroNetwork, phase: Phase, clients: int, args: argparse.Namespace
) -> None:
    before = {name: int(n.get("served", 0)) for name, n in net.connected().items()}
    async with httpx.AsyncClient(base_url=net.url, timeout=300, trust_env=False) as client:
        await one_request(client, "Hi", 4)  # warm the path
        stop_at = time.perf_counter() + args.seconds

        async def loop(i: int) -> None:
            n = 0
            while time.perf_counter() < stop_at:
                prompt = f"{PROMPTS[(i + n) % len(PROMPTS)]} (request {i}.{n})"
                n += 1
                try:
                    ttft, tokens = await one_request(client, prompt, args.tokens, phase, stop_at)
                except (RuntimeError, httpx.HTTPError):
                    phase.errors += 1
                    continue
                phase.ttfts.append(ttft)
                phase.tokens += tokens

        started = time.perf_counter()
        phase.seconds = args.seconds
        await asyncio.gather(*(loop(i) for i in range(clients)))
        phase.wall_s = time.perf_counter() - started
    after = net.connected()
    phase.served = {
        name: int(n.get("served", 0)) - before.get(name, 0) for name, n in after.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--big-threads", type=int, default=2)
    parser.add_argument("--small-threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=2, help="slots per node")
    parser.add_argument("--clients", type=int, default=2, help="concurrent clients per node")
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each phase")
    parser.add_argument("--tokens", type=int, default=64, help="max tokens per answer")
    parser.add_argument("--ctx-size", type=int, default=4096)
    args = parser.parse_args()
    print(
        f"conditions: {os.cpu_count()} logical cores (shared, noisy); nodes big = "
        f"{args.big_threads} threads, small = {args.small_threads} thread(s) (threads_batch "
        f"equal), {args.parallel} slots each, ctx {args.ctx_size}, SmolLM2-135M Q4_1, greedy, "
        f"{args.tokens} max tokens, {args.clients} closed-loop clients per node, "
        f"{args.seconds:g} s per phase; load avg at start {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    net = HeteroNetwork(threads=1, parallel=args.parallel, ctx_size=args.ctx_size)
    phases: dict[str, Phase] = {}
    with net:
        net.extra = {"LICHEN_OPERATOR_SURFACES": "open"}
        net.start_tracker()
        for name, threads in (("big", args.big_threads), ("small", args.small_threads)):
            net.start_with_threads(name, threads)
            phases[name] = phase = Phase(name)
            asyncio.run(run_phase(net, phase, args.clients, args))
            report(phase)
            proc = next(p for p in net.procs if p.name == name)
            net.procs.remove(proc)
            proc.stop()
            deadline = time.monotonic() + 30
            while name in net.connected() and time.monotonic() < deadline:
                time.sleep(0.2)
        for name, threads in (("big", args.big_threads), ("small", args.small_threads)):
            net.start_with_threads(name, threads, net.root / name)
        phases["both"] = phase = Phase("both")
        asyncio.run(run_phase(net, phase, 2 * args.clients, args))
        report(phase)
    solo = phases["big"].tokens_per_s + phases["small"].tokens_per_s
    print(
        f"aggregate both / (big + small solo): {phase.tokens_per_s:.1f} / {solo:.1f} tok/s = "
        f"{phase.tokens_per_s / solo if solo else 0:.2f}x (target >= 0.9); big alone / small "
        f"alone {phases['big'].tokens_per_s / max(1e-9, phases['small'].tokens_per_s):.2f}x",
        flush=True,
    )
    print(f"load avg at end {os.getloadavg()[0]:.2f}")


def report(phase: Phase) -> None:
    print(
        f"{phase.name:>5}: {phase.tokens_per_s:6.1f} tok/s ({phase.window_tokens} tokens streamed "
        f"in the {phase.seconds:g} s window; {phase.tokens} completed by {phase.wall_s:.1f} s) "
        f"| TTFT p50 {pct(phase.ttfts, 50):.3f} s p95 "
        f"{pct(phase.ttfts, 95):.3f} s | requests {len(phase.ttfts)}, errors {phase.errors} | "
        f"served per node {phase.served} | load avg {os.getloadavg()[0]:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
