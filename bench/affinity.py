"""Prefix affinity: multi-turn conversations on 3 nodes, with and without affinity.

Starts a real network (``lichen tracker`` + 3 ``lichen node`` processes, SmolLM2,
1 thread each) twice: once with ``LICHEN_AFFINITY=true`` (the default) and once with
``LICHEN_AFFINITY=false``, in the order given by ``--order``. On each, ``--conversations``
conversations run at the same time, each ``--turns`` turns long; every turn adds a
``--turn-words``-word user message to a shared system prompt and the history (the
assistant's answers included), so histories grow turn by turn. Prints TTFT p50/p95 of
turns >= 2 (the ones whose prefix a node can hold) and of turn 1, the ratio off/on,
and how many requests each node served (load spread: max/even).

    .venv/bin/python bench/affinity.py --conversations 6 --turns 4 --turn-words 150
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from _net import BenchNetwork
from overhead import pct

SYSTEM = (
    "You are a helpful assistant for a gardening club. Answer in one or two short "
    "sentences, plainly, without lists. "
)
WORDS = [
    "soil",
    "water",
    "seed",
    "tomato",
    "basil",
    "rain",
    "sun",
    "shade",
    "compost",
    "leaf",
    "root",
    "pot",
    "spring",
    "summer",
    "autumn",
    "frost",
    "mulch",
    "prune",
    "harvest",
    "bloom",
    "bee",
    "worm",
    "clay",
    "sand",
    "garden",
    "bed",
    "row",
    "weed",
    "hose",
]


@dataclass
class Turn:
    conversation: int
    turn: int
    ttft_s: float
    prompt_tokens: int
    cached_tokens: int


def prefilled(turns: list[Turn]) -> int:
    """Prompt tokens the nodes read anew (not from a KV cache) on turns >= 2."""
    return sum(t.prompt_tokens - t.cached_tokens for t in turns if t.turn >= 2)


def prefill_floor(turns: list[Turn]) -> int:
    """On turns >= 2, the tokens each turn added to its conversation's previous prompt:
    what a node still holding the whole history would have to read."""
    prompts = {(t.conversation, t.turn): t.prompt_tokens for t in turns}
    return sum(
        t.prompt_tokens - prompts.get((t.conversation, t.turn - 1), 0) for t in turns if t.turn >= 2
    )


def user_message(rng: random.Random, conversation: int, turn: int, words: int) -> str:
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"Conversation {conversation}, question {turn}: notes: {body}. What should I do?"


async def ask(client: httpx.AsyncClient, messages: list[dict[str, str]], tokens: int) -> Any:
    body = {
        "model": "smollm2-135m",
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = 0.0
    text: list[str] = []
    prompt_tokens = cached = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            if payload.get("choices") and payload["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter()
                text.append(payload["choices"][0]["delta"]["content"])
            if payload.get("usage"):
                prompt_tokens = payload["usage"]["prompt_tokens"]
                details = payload["usage"].get("prompt_tokens_details") or {}
                cached = int(details.get("cached_tokens") or 0)
    return (first or time.perf_counter()) - started, "".join(text), prompt_tokens, cached


async def conversation(
    client: httpx.AsyncClient, c: int, args: argparse.Namespace, out: list[Turn]
) -> None:
    rng = random.Random(1000 + c)
    messages = [{"role": "system", "content": SYSTEM}]
    await asyncio.sleep(c * args.stagger)  # conversations start a little apart, as users do
    for t in range(1, args.turns + 1):
        messages.append({"role": "user", "content": user_message(rng, c, t, args.turn_words)})
        ttft, answer, prompt_tokens, cached = await ask(client, messages, args.tokens)
        messages.append({"role": "assistant", "content": answer})
        out.append(Turn(c, t, ttft, prompt_tokens, cached))
        await asyncio.sleep(rng.uniform(0, 2 * args.think))  # the user reads and types


def run_mode(affinity: bool, args: argparse.Namespace) -> tuple[list[Turn], list[int], float]:
    net = BenchNetwork(
        threads=1,
        parallel=args.parallel,
        ctx_size=args.ctx_size,
        extra={
            "LICHEN_AFFINITY": "true" if affinity else "false",
            "LICHEN_OPERATOR_SURFACES": "open",  # /v1/network: the per-node served counts
        },
    )
    with net:
        net.start_tracker()
        for i in range(args.nodes):
            net.start_node(f"n{i}")
        before = {name: n.get("served", 0) for name, n in net.connected().items()}
        turns: list[Turn] = []

        async def all_conversations() -> float:
            async with httpx.AsyncClient(base_url=net.url, timeout=600, trust_env=False) as client:
                await ask(client, [{"role": "user", "content": "Hi"}], 4)  # warm the path
                started = time.perf_counter()
                await asyncio.gather(
                    *(conversation(client, c, args, turns) for c in range(args.conversations))
                )
                return time.perf_counter() - started

        wall = asyncio.run(all_conversations())
        after = net.connected()
        served = [int(after[name].get("served", 0)) - before.get(name, 0) for name in after]
    return turns, served, wall


def summary(turns: list[Turn]) -> tuple[float, float]:
    ttfts = [t.ttft_s for t in turns]
    return pct(ttfts, 50), pct(ttfts, 95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--conversations", type=int, default=6)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--turn-words", type=int, default=150)
    parser.add_argument("--tokens", type=int, default=24, help="max tokens per answer")
    parser.add_argument("--parallel", type=int, default=2, help="slots per node")
    parser.add_argument("--ctx-size", type=int, default=4096, help="context per node (all slots)")
    parser.add_argument("--stagger", type=float, default=0.3, help="seconds between starts")
    parser.add_argument("--order", default="on,off", help="which network runs first")
    parser.add_argument("--think", type=float, default=0.0, help="mean seconds between turns")
    args = parser.parse_args()
    print(
        f"conditions: {args.nodes} nodes x 1 thread (threads_batch 1), {args.parallel} slots, "
        f"ctx {args.ctx_size}/node, SmolLM2-135M Q4_1, greedy, {args.tokens} tokens/answer, "
        f"{args.conversations} concurrent conversations x {args.turns} turns, "
        f"{args.turn_words} words/user turn, think time 0-{2 * args.think:g} s; "
        "2 shared cores (noisy); "
        f"load avg at start {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results: dict[str, tuple[list[Turn], list[int], float]] = {}
    for mode in args.order.split(","):
        results[mode] = run_mode(mode == "on", args)
    for mode, (turns, served, wall) in results.items():
        later = [t for t in turns if t.turn >= 2]
        first = [t for t in turns if t.turn == 1]
        p50, p95 = summary(later)
        f50, f95 = summary(first)
        longest = max(t.prompt_tokens for t in turns)
        even = sum(served) / max(1, len(served))
        cached = sum(t.cached_tokens for t in later) / max(1, sum(t.prompt_tokens for t in later))
        print(
            f"affinity {mode:>3}: turns>=2 TTFT p50 {p50:.3f} s p95 {p95:.3f} s | turn 1 p50 "
            f"{f50:.3f} s p95 {f95:.3f} s | longest prompt {longest} tokens | turns>=2 prompt "
            f"tokens from the KV cache {100 * cached:.0f}% | served per node "
            f"{served} (max/even {max(served) / even if even else 0:.2f}) | wall {wall:.1f} s",
            flush=True,
        )
    if "on" in results and "off" in results:
        on50, on95 = summary([t for t in results["on"][0] if t.turn >= 2])
        off50, off95 = summary([t for t in results["off"][0] if t.turn >= 2])
        print(f"ratio off/on, turns>=2: TTFT p50 {off50 / on50:.2f}x, p95 {off95 / on95:.2f}x")
        on_read, off_read = prefilled(results["on"][0]), prefilled(results["off"][0])
        print(
            f"prompt tokens prefilled (not from the KV cache), turns>=2: off/on "
            f"{off_read / max(1, on_read):.2f}x ({off_read} vs {on_read}); the least any "
            f"router could leave to prefill here (each turn's tokens new since the last "
            f"turn): {prefill_floor(results['on'][0])} tokens. Where prefill is most of "
            "the work, TTFT cannot fall by more than the prefilled ratio."
        )
    print(f"load avg at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
