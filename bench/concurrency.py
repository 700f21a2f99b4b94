"""Concurrent streams: the engine alone vs the same engine behind ``lichen up``.

For 1, 4 and 8 concurrent streaming requests (greedy, N tokens each, different
prompts), several rounds per level, alternating between

- ``engine``: :class:`~lichen.engines.llamacpp.LlamaCppEngine` in this process, the
  requests started together with ``asyncio.gather``;
- ``lichen``: ``lichen up`` as a subprocess (same model, threads, slots, context),
  the requests sent together over its OpenAI HTTP API;

and prints, side by side: aggregate tokens/s (all tokens / wall time of the round),
TTFT p50/p95 and whole-request latency p50/p95, with the conditions.

    .venv/bin/python bench/concurrency.py --levels 1 4 8 --rounds 3 --tokens 64 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from overhead import (
    PROMPTS,
    Run,
    add_engine_args,
    conditions,
    direct_engine,
    lichen_up,
    pct,
    resolve_model,
    run_direct,
    run_http,
)

EXTRA_PROMPTS = [
    "Tell a long tale about a lighthouse keeper and a storm.",
    "Describe, step by step, how to plant and grow tomatoes.",
    "Write a detailed travel diary of a week in the mountains.",
    "Explain how a steam engine works to a curious child, in detail.",
]
ALL_PROMPTS = PROMPTS + EXTRA_PROMPTS


@dataclass
class Round:
    runs: list[Run]
    wall_s: float

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.runs)


async def one_round(level: int, offset: int, start: Callable[[str], Awaitable[Run]]) -> Round:
    prompts = [ALL_PROMPTS[(offset + i) % len(ALL_PROMPTS)] for i in range(level)]
    began = time.perf_counter()
    runs = await asyncio.gather(*(start(p) for p in prompts))
    return Round(list(runs), time.perf_counter() - began)


def summarize(rounds: list[Round]) -> dict[str, float]:
    runs = [r for rd in rounds for r in rd.runs]
    ttft = [r.ttft_s for r in runs]
    latency = [r.total_s for r in runs]
    return {
        "agg_tps": sum(rd.tokens for rd in rounds) / sum(rd.wall_s for rd in rounds),
        "ttft_p50": pct(ttft, 50),
        "ttft_p95": pct(ttft, 95),
        "lat_p50": pct(latency, 50),
        "lat_p95": pct(latency, 95),
        "tokens": sum(r.tokens for r in runs) / len(runs),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_engine_args(parser)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per level and path")
    args = parser.parse_args()
    args.batch_threads = args.batch_threads or args.threads
    model = resolve_model(args.model, args.models_dir)
    opts = {
        "threads": args.threads,
        "batch_threads": args.batch_threads,
        "parallel": args.parallel,
        "ctx_size": args.ctx_size,
    }
    print(
        conditions(
            args,
            model,
            {
                "workload": f"levels {args.levels}, {args.rounds} rounds per level and path, "
                f"greedy, max_tokens {args.tokens}, distinct prompts, engine/lichen alternating",
            },
        ),
        flush=True,
    )
    results: dict[tuple[int, str], dict[str, float]] = {}
    with lichen_up(model, args.models_dir, **opts) as url:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with (
            direct_engine(model, **opts) as engine,
            httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client,
        ):

            def via_engine(prompt: str) -> Awaitable[Run]:
                return run_direct(engine, model.name, prompt, args.tokens)

            def via_lichen(prompt: str) -> Awaitable[Run]:
                return run_http(client, model.name, prompt, args.tokens)

            paths = {"engine": via_engine, "lichen": via_lichen}
            # warm-up: open enough HTTP connections and touch every slot once
            top = max(args.levels)
            for start in paths.values():
                await one_round(top, 0, start)
            for level in args.levels:
                rounds: dict[str, list[Round]] = {"engine": [], "lichen": []}
                for i in range(args.rounds):
                    order = ["engine", "lichen"] if i % 2 == 0 else ["lichen", "engine"]
                    for path in order:
                        rounds[path].append(await one_round(level, i * level, paths[path]))
                for path, rs in rounds.items():
                    results[(level, path)] = summarize(rs)
                print(f"level {level} done", file=sys.stderr, flush=True)
    print(report(args.levels, results))


def report(levels: list[int], results: dict[tuple[int, str], dict[str, float]]) -> str:
    rows = [
        f"\n{'streams':>7} {'path':<7} {'agg tok/s':>10} {'TTFT p50':>9} {'TTFT p95':>9} "
        f"{'lat p50':>8} {'lat p95':>8} {'tok/req':>8}"
    ]
    for level in levels:
        for path in ("engine", "lichen"):
            s = results[(level, path)]
            rows.append(
                f"{level:>7} {path:<7} {s['agg_tps']:>10.1f} {s['ttft_p50']:>8.3f}s "
                f"{s['ttft_p95']:>8.3f}s {s['lat_p50']:>7.2f}s {s['lat_p95']:>7.2f}s "
                f"{s['tokens']:>8.1f}"
            )
        e, n = results[(level, "engine")], results[(level, "lichen")]
        rows.append(
            f"{'':>7} {'ratio':<7} {n['agg_tps'] / e['agg_tps']:>10.3f} "
            f"{n['ttft_p50'] - e['ttft_p50']:>+8.3f}s (lichen - engine TTFT p50)"
        )
    lo, hi = min(levels), max(levels)
    if lo == 1 and hi >= 8:
        single, top = results[(1, "lichen")], results[(hi, "lichen")]
        scale = top["agg_tps"] / single["agg_tps"]
        rows += [
            "",
            f"lichen at {hi} streams: aggregate {scale:.2f}x single-stream   target >= 1.4x  "
            f"{'MET' if scale >= 1.4 else 'MISSED'}",
            f"lichen at {hi} streams: TTFT p50 {top['ttft_p50']:.3f}s   target <= 0.5 s  "
            f"{'MET' if top['ttft_p50'] <= 0.5 else 'MISSED'}",
        ]
    rows.append(f"load avg at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return "\n".join(rows)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up like Ctrl-C
    asyncio.run(main())
