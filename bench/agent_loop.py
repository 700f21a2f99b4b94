"""Agent loop on 2 nodes: prompt tokens processed and TTFT per turn, with and without
prefix reuse, in one run.

Starts a real network (``lichen tracker`` + 2 ``lichen node`` processes, SmolLM2 with
no native tool template, so tools are served generically; one KV cache per node,
``LICHEN_KV_UNIFIED=true``) and runs a ``--turns``-turn coding-agent session through
the gateway's chat completions (streamed): a ``--system-tokens`` system prompt, 10
tools, each turn re-sending the whole conversation. Each turn is measured two ways:

- ``cold``: with ``--cold every`` the same turn is first sent with a unique first
  line, so no node holds its prefix (what a turn costs on a node that does not hold
  the session); with ``--cold first`` (for prompts too long to prefill 7 times in a
  few minutes on 2 cores) turn 1, which no node holds yet, is the cold reference for
  every later turn (conservative: later turns' prompts are a little longer);
- ``reuse``: the session as an agent sends it; the router's prefix affinity keeps it
  on the node that served its earlier turns, whose llama.cpp slot still holds the
  prefix (``cache_prompt``), so only the new tokens are processed.

Processed tokens are what the engine reports through the gateway
(``usage.prompt_tokens - usage.prompt_tokens_details.cached_tokens``). TTFT is the
time to the first content or tool-call delta; with generic tools the answer is parsed
from constrained JSON and arrives whole at the end, so TTFT includes generating up to
``--tokens`` tokens.

    .venv/bin/python bench/agent_loop.py                    # ~2.3k-token prompts, ~4 min
    .venv/bin/python bench/agent_loop.py --system-tokens 5600 --cold first  # ~7.5k, ~10 min

SmolLM2 holds at most 8192 tokens a request (its training context; llama.cpp caps
the slot there whatever ``--ctx-size`` says), so ~5600 system tokens (+ the tools,
~7.4k prompt tokens) is the largest session that fits 6 turns.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from _net import BenchNetwork

NAMES = ["read_file", "write_file", "list_dir", "grep", "run_tests"]
NAMES += ["git_diff", "git_log", "web_search", "ask_user", "apply_patch"]
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"The {name.replace('_', ' ')} tool.",
            "parameters": {
                "type": "object",
                "properties": {"target": {"type": "string", "maxLength": 32}},
                "required": ["target"],
            },
        },
    }
    for name in NAMES
]


@dataclass
class AgentNetwork(BenchNetwork):
    """A bench network whose processes get extra settings."""

    extra: dict[str, str] = field(default_factory=dict)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return super().env(self.extra | (extra or {}))


@dataclass
class Sent:
    ttft_s: float
    prompt: int
    cached: int
    node: str
    answer: str

    @property
    def processed(self) -> int:
        return self.prompt - self.cached

    def __str__(self) -> str:
        return f"{self.processed}/{self.prompt} tokens {self.ttft_s:.2f} s on {self.node[:10]}"


Row = tuple[int, Sent, Sent | None]


def system_prompt(tokens: int) -> str:
    line = "Rule {i}: when you edit src/pkg/module_{i}.py keep functions short and test it.\n"
    lines = [line.format(i=i) for i in range(max(1, tokens // 22))]  # ~22 tokens a line
    return "You are a careful coding agent.\n" + "".join(lines)


def send(client: httpx.Client, messages: list[dict[str, str]], tokens: int) -> Sent:
    body = {
        "model": "smollm2-135m",
        "messages": messages,
        "tools": TOOLS,
        "tool_choice": "auto",
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = 0.0
    answer: list[str] = []
    usage: dict[str, Any] = {}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:300]!r}")
        node = r.headers.get("x-lichen-node", "?")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            for choice in payload.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("tool_calls"):
                    first = first or time.perf_counter()
                    answer.append(delta.get("content") or json.dumps(delta["tool_calls"]))
            usage = payload.get("usage") or usage
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    ttft = (first or time.perf_counter()) - started
    return Sent(ttft, int(usage.get("prompt_tokens") or 0), cached, node, "".join(answer))


def run(args: argparse.Namespace) -> list[Row]:
    net = AgentNetwork(
        threads=args.threads,
        parallel=2,
        ctx_size=args.ctx_size,
        extra={
            "LICHEN_KV_UNIFIED": "true",
            # a cold 8k prompt on 1 shared thread takes minutes: not a failed or stalled
            # node, nor a request past its deadline
            "LICHEN_FIRST_TOKEN_TIMEOUT_S": "1800",
            "LICHEN_REQUEST_TIMEOUT_S": "1800",
            "LICHEN_ENGINE_STALL_S": "1800",
            "LICHEN_ANONYMOUS_REQUESTS_PER_MINUTE": "0",
            "LICHEN_ANONYMOUS_TOKENS_PER_DAY": "0",
            "LICHEN_OPERATOR_SURFACES": "open",  # /v1/network: which nodes joined
        },
    )
    rows: list[Row] = []
    with net:
        net.start_tracker()
        for i in range(2):
            net.start_node(f"n{i}")
        print(f"network up: {sorted(net.connected())}", flush=True)
        system = system_prompt(args.system_tokens)
        session = [{"role": "system", "content": system}]
        with httpx.Client(base_url=net.url, timeout=1800, trust_env=False) as client:
            send(client, [{"role": "user", "content": "Hi"}], 4)  # warm the path
            for n in range(1, args.turns + 1):
                session.append({"role": "user", "content": f"Step {n}: fix the next failing test."})
                cold: Sent | None = None
                if args.cold == "every":
                    unique = {"role": "system", "content": f"[{secrets.token_hex(8)}]\n{system}"}
                    cold = send(client, [unique, *session[1:]], args.tokens)
                reuse = send(client, session, args.tokens)
                session.append({"role": "assistant", "content": reuse.answer or "ok"})
                rows.append((n, reuse, cold))
                print(f"turn {n}: reuse {reuse}; cold {cold}", flush=True)
    return rows


def report(args: argparse.Namespace, rows: list[Row], wall: float) -> None:
    cold_how = (
        "a cold twin of every turn (unique first line)"
        if args.cold == "every"
        else "turn 1 (no node holds it) is the cold reference for every later turn"
    )
    print(
        f"conditions: 2 nodes x {args.threads} thread (threads_batch {args.threads}), 2 slots, "
        f"ctx {args.ctx_size}/node kv_unified, SmolLM2-135M Q4_1 (generic tools), greedy, "
        f"<= {args.tokens} tokens/answer, system prompt ~{args.system_tokens} tokens + 10 tools, "
        f"{args.turns} turns, chat completions streamed through the gateway; cold: {cold_how}; "
        f"python {sys.version.split()[0]}; 2 shared cores (noisy); wall {wall:.0f} s"
    )
    print("turn  prompt  processed(reuse)  processed(cold)  ttft_reuse_s  ttft_cold_s  cold/reuse")
    first = rows[0][1]
    for n, reuse, twin in rows:
        cold = twin or first
        ratio = cold.ttft_s / reuse.ttft_s if reuse.ttft_s else float("inf")
        mark = "" if twin else "*"
        print(
            f"{n:>4}  {reuse.prompt:>6}  {reuse.processed:>16}  {cold.processed:>14}{mark:1}"
            f"  {reuse.ttft_s:>12.2f}  {cold.ttft_s:>10.2f}{mark:1}  {ratio:>9.1f}x"
        )
    if args.cold == "first":
        print("* turn 1's cold numbers (its prompt is shorter than later turns': conservative)")
    later = rows[1:]
    if not later:
        return
    share = sum(r.processed for _, r, _ in later) / max(1, sum(r.prompt for _, r, _ in later))
    cold_s = sum((c or first).ttft_s for _, _, c in later)
    speed = cold_s / max(1e-9, sum(r.ttft_s for _, r, _ in later))
    nodes = sorted({r.node for _, r, _ in rows})
    print(
        f"turns 2-{args.turns}: reuse processes {share:.1%} of their prompt tokens "
        f"(target <= 10%); TTFT {speed:.1f}x lower than cold (target >= 5x); "
        f"session served by {nodes}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--system-tokens",
        type=int,
        default=1500,
        help="system prompt size; SmolLM2 holds 8192 tokens a request, so at most ~5600",
    )
    parser.add_argument("--ctx-size", type=int, default=32768, help="per node, one KV cache")
    parser.add_argument("--threads", type=int, default=1, help="per node")
    parser.add_argument("--tokens", type=int, default=32, help="max tokens per answer")
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument(
        "--cold",
        choices=["every", "first"],
        default="every",
        help="every: also send each turn cold; first: turn 1 is the cold reference (faster)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    rows = run(args)
    report(args, rows, time.perf_counter() - started)


if __name__ == "__main__":
    main()
