"""Overload: offered load at 1x, 2x and 4x capacity against one ``lichen up``.

Starts ``lichen up`` (SmolLM2, ``--threads`` threads, ``--parallel`` slots) with the
per-client limits off (this measures the network's admission, not a client's cap), then:

1. unloaded: ``--unloaded`` requests one at a time: TTFT p50/p95;
2. capacity: ``--parallel`` closed-loop clients for ``--seconds``: completed tokens/s
   and requests/s (what the node sustains with every slot busy);
3. for each multiple k of ``--levels``: open-loop Poisson arrivals at k x the capacity's
   requests/s for ``--seconds``. Admitted requests (HTTP 200) report TTFT and tokens;
   refused ones (429/503) report how long the refusal took and whether it carried
   ``Retry-After``. Goodput = tokens of admitted requests that completed, over the time
   from the first arrival to the last completion.

Prints, per level: goodput / capacity (target >= 0.9 at 4x), admitted TTFT p95 /
unloaded TTFT p95 (target <= 2), refusal latency p50/p95/max (target < 50 ms).
Extra settings for ``lichen up`` go through ``--env NAME=VALUE`` (e.g. the tracker's
``LICHEN_QUEUE_PER_SLOT``).

    .venv/bin/python bench/overload.py --seconds 30 --levels 1 2 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from _net import DEFAULT_MODELS_DIR
from _report import pct
from overhead import lichen_up, resolve_model

PROMPTS = [
    "Tell a long tale about a lighthouse keeper and a storm.",
    "Describe, step by step, how to plant and grow tomatoes.",
    "Write a detailed travel diary of a week in the mountains.",
    "Explain how a steam engine works to a curious child, in detail.",
    "Write a story about a fox who learns to fish.",
    "Describe a busy market in a small town on a Saturday morning.",
]


@dataclass
class Level:
    name: str
    ttfts: list[float] = field(default_factory=list)
    tokens: int = 0
    refusals: list[float] = field(default_factory=list)
    refusal_codes: dict[int, int] = field(default_factory=dict)
    retry_after: int = 0
    errors: int = 0
    wall_s: float = 0.0

    @property
    def goodput(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0


def lichen_up_unlimited(args: argparse.Namespace) -> AbstractContextManager[str]:
    """``lichen up`` without per-address limits (the bench is one client), plus ``--env``."""
    unlimited = {
        "LICHEN_ANONYMOUS_CONCURRENT_REQUESTS": "0",
        "LICHEN_ANONYMOUS_REQUESTS_PER_MINUTE": "0",
        "LICHEN_ANONYMOUS_TOKENS_PER_DAY": "0",
    }
    return lichen_up(
        resolve_model("smollm2-135m", args.models_dir),
        args.models_dir,
        threads=args.threads,
        batch_threads=args.threads,
        parallel=args.parallel,
        ctx_size=args.ctx_size,
        env=unlimited | dict(item.split("=", 1) for item in args.env),
    )


async def one(client: httpx.AsyncClient, n: int, tokens: int, level: Level) -> None:
    body = {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": f"{PROMPTS[n % len(PROMPTS)]} (#{n})"}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = 0.0
    completion = 0
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code in (429, 503):
                await r.aread()
                level.refusals.append(time.perf_counter() - started)
                level.refusal_codes[r.status_code] = level.refusal_codes.get(r.status_code, 0) + 1
                level.retry_after += "retry-after" in r.headers
                return
            if r.status_code != 200:
                level.errors += 1
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                payload = json.loads(line[6:])
                if payload.get("choices") and payload["choices"][0]["delta"].get("content"):
                    first = first or time.perf_counter()
                if payload.get("usage"):
                    completion = int(payload["usage"]["completion_tokens"])
                if payload.get("error"):
                    level.errors += 1
                    return
    except httpx.HTTPError:
        level.errors += 1
        return
    level.ttfts.append((first or time.perf_counter()) - started)
    level.tokens += completion


async def closed_loop(url: str, clients: int, seconds: float, tokens: int) -> Level:
    level = Level("capacity")
    async with httpx.AsyncClient(base_url=url, timeout=600, trust_env=False) as client:
        stop_at = time.perf_counter() + seconds
        counter = iter(range(10**9))

        async def loop() -> None:
            while time.perf_counter() < stop_at:
                await one(client, next(counter), tokens, level)

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        level.wall_s = time.perf_counter() - started
    return level


async def sequential(url: str, count: int, tokens: int) -> Level:
    level = Level("unloaded")
    async with httpx.AsyncClient(base_url=url, timeout=600, trust_env=False) as client:
        for n in range(count):
            await one(client, 1000 + n, tokens, level)
    return level


async def open_loop(url: str, name: str, rate: float, seconds: float, tokens: int) -> Level:
    level = Level(name)
    rng = random.Random(7)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(
        base_url=url, timeout=600, trust_env=False, limits=limits
    ) as client:
        tasks: list[asyncio.Task[None]] = []
        started = time.perf_counter()
        at = 0.0
        n = 0
        while at < seconds:
            delay = started + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(client, 2000 + n, tokens, level)))
            n += 1
            at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
        level.wall_s = time.perf_counter() - started
    return level


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=2, help="slots")
    parser.add_argument("--ctx-size", type=int, default=4096)
    parser.add_argument("--tokens", type=int, default=64, help="max tokens per answer")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each level")
    parser.add_argument("--unloaded", type=int, default=8, help="sequential requests")
    parser.add_argument("--levels", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for lichen up")
    args = parser.parse_args()
    print(
        f"conditions: lichen up, SmolLM2-135M Q4_1, {args.threads} threads (batch equal), "
        f"{args.parallel} slots, ctx {args.ctx_size}, greedy, {args.tokens} max tokens, "
        f"{args.seconds:g} s per level, Poisson arrivals, extra env {args.env or 'none'}; "
        f"{os.cpu_count()} logical cores (shared, noisy); load avg at start "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with lichen_up_unlimited(args) as url:
        asyncio.run(sequential(url, 2, 4))  # warm up
        unloaded = asyncio.run(sequential(url, args.unloaded, args.tokens))
        print(
            f"unloaded: TTFT p50 {pct(unloaded.ttfts, 50):.3f} s p95 "
            f"{pct(unloaded.ttfts, 95):.3f} s ({len(unloaded.ttfts)} requests)",
            flush=True,
        )
        capacity = asyncio.run(closed_loop(url, args.parallel, args.seconds, args.tokens))
        requests = len(capacity.ttfts)
        rate = requests / capacity.wall_s
        print(
            f"capacity: {capacity.goodput:.1f} tok/s, {rate:.2f} req/s ({requests} requests, "
            f"{args.parallel} closed-loop clients) | TTFT p95 {pct(capacity.ttfts, 95):.3f} s "
            f"| load avg {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        base_p95 = pct(unloaded.ttfts, 95)
        for k in args.levels:
            level = asyncio.run(open_loop(url, f"{k:g}x", k * rate, args.seconds, args.tokens))
            offered = len(level.ttfts) + len(level.refusals) + level.errors
            print(
                f"{level.name:>4}: offered {offered} req ({k * rate:.2f}/s) | admitted "
                f"{len(level.ttfts)}, refused {len(level.refusals)} {level.refusal_codes} "
                f"(Retry-After on {level.retry_after}), errors {level.errors} | goodput "
                f"{level.goodput:.1f} tok/s = {level.goodput / capacity.goodput:.2f}x capacity | "
                f"admitted TTFT p50 {pct(level.ttfts, 50):.3f} s p95 {pct(level.ttfts, 95):.3f} s"
                f" = {pct(level.ttfts, 95) / base_p95:.2f}x unloaded p95 | refusal latency "
                f"p50 {1000 * pct(level.refusals, 50):.1f} ms p95 "
                f"{1000 * pct(level.refusals, 95):.1f} ms max "
                f"{1000 * max(level.refusals, default=float('nan')):.1f} ms | load avg "
                f"{os.getloadavg()[0]:.2f}",
                flush=True,
            )
    print(f"load avg at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
