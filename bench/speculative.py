"""n-gram speculative decoding (llama.cpp's draft-free variants via xllamacpp): does it pay?

Loads the model twice in this process with xllamacpp (same threads, slots, context):
``base`` without speculative decoding and ``spec`` with ``--type`` (default
``ngram_simple``: drafts the continuation of an n-gram already seen in the context).
Then, taking turns request by request so that drifts in load hit both, sends

- ``repetitive`` prompts, whose answers copy the prompt (reformat JSON, repeat code
  with a small change), where n-gram drafts should be accepted often;
- ``chat`` prompts (ordinary questions), where they mostly should not;

greedy, ``--tokens`` max tokens, and prints decode tokens/s p50 per kind and the ratio
spec/base, with the answers' agreement (greedy speculative decoding should give the
same text, up to llama.cpp's batch-dependent rounding).

    .venv/bin/python bench/speculative.py --reps 3 --tokens 128 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import xllamacpp

from _net import DEFAULT_MODELS_DIR
from _report import pct

JSON_DOC = (
    '{"orders": [{"id": 1, "item": "apple", "qty": 3, "price": 0.5}, '
    '{"id": 2, "item": "pear", "qty": 1, "price": 0.75}, '
    '{"id": 3, "item": "plum", "qty": 12, "price": 0.2}, '
    '{"id": 4, "item": "fig", "qty": 6, "price": 1.1}]}'
)
CODE = (
    "def total(orders):\n"
    "    result = 0\n"
    "    for order in orders:\n"
    "        result = result + order['qty'] * order['price']\n"
    "    return result\n\n"
    "def count(orders):\n"
    "    result = 0\n"
    "    for order in orders:\n"
    "        result = result + order['qty']\n"
    "    return result\n"
)
REPETITIVE = [
    f"Repeat this JSON exactly, one order per line:\n{JSON_DOC}",
    f"Rewrite this Python code, renaming `result` to `acc`. Output only code.\n{CODE}",
    f"Copy this JSON, changing every qty to 0:\n{JSON_DOC}",
    f"Repeat this code exactly, then add a docstring to each function.\n{CODE}",
]
CHAT = [
    "Tell a short tale about a lighthouse keeper and a storm.",
    "Explain how a steam engine works to a curious child.",
    "Describe a busy market in a small town on a Saturday morning.",
    "What should I plant in a shady garden bed, and why?",
]
TYPES = {
    "ngram_simple": "COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE",
    "ngram_map_k": "COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K",
    "ngram_mod": "COMMON_SPECULATIVE_TYPE_NGRAM_MOD",
    "ngram_cache": "COMMON_SPECULATIVE_TYPE_NGRAM_CACHE",
}


def load(path: Path, args: argparse.Namespace, spec: str | None) -> Any:
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_parallel = 1
    params.n_ctx = args.ctx_size
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.warmup = False
    params.verbosity = -1
    params.n_threads_http = 1
    if spec is not None:
        kind = getattr(xllamacpp.common_speculative_type, TYPES[spec])
        params.speculative.types = [kind]
        params.speculative.draft.n_max = args.draft_max
        if spec in ("ngram_simple", "ngram_map_k"):  # their draft length is size_n
            getattr(params.speculative, spec).size_n = args.draft_max
    return xllamacpp.Server(params)


def generate(server: Any, prompt: str, tokens: int) -> tuple[float, int, str, int, int]:
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
    }
    started = time.perf_counter()
    result = server.handle_chat_completions(body)
    elapsed = time.perf_counter() - started
    if not isinstance(result, dict) or "choices" not in result:
        raise RuntimeError(f"engine error: {str(result)[:300]}")
    timings = result.get("timings") or {}
    n = int(timings.get("predicted_n") or result["usage"]["completion_tokens"])
    speed = float(timings.get("predicted_per_second") or (n / elapsed))
    drafted = int(timings.get("draft_n") or 0)
    accepted = int(timings.get("draft_n_accepted") or 0)
    return speed, n, str(result["choices"][0]["message"]["content"]), drafted, accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx-size", type=int, default=4096)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--type", default="ngram_simple", choices=sorted(TYPES))
    parser.add_argument(
        "--draft-max", type=int, default=12, help="tokens drafted at most (llama.cpp: 12)"
    )
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    args = parser.parse_args()
    path = next((args.models_dir / "smollm2-135m").glob("*.gguf"))
    print(
        f"conditions: xllamacpp in-process, SmolLM2-135M Q4_1, {args.threads} threads (batch "
        f"equal), 1 slot, greedy, {args.tokens} max tokens, {args.reps} reps x "
        f"{len(REPETITIVE)} prompts per kind, spec = {args.type} (draft max {args.draft_max}); "
        f"{os.cpu_count()} logical cores (shared, noisy); load avg at start "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )
    servers = {"base": load(path, args, None), "spec": load(path, args, args.type)}
    for server in servers.values():
        generate(server, "Hi", 4)  # warm up
    speeds: dict[tuple[str, str], list[float]] = {}
    same: dict[str, int] = {"repetitive": 0, "chat": 0}
    drafts: dict[str, list[int]] = {"repetitive": [0, 0], "chat": [0, 0]}
    for rep in range(args.reps):
        for kind, prompts in (("repetitive", REPETITIVE), ("chat", CHAT)):
            for i, prompt in enumerate(prompts):
                order = ("base", "spec") if (rep + i) % 2 == 0 else ("spec", "base")
                texts: dict[str, str] = {}
                for mode in order:
                    speed, _n, text, drafted, accepted = generate(
                        servers[mode], prompt, args.tokens
                    )
                    drafts[kind][0] += drafted
                    drafts[kind][1] += accepted
                    speeds.setdefault((kind, mode), []).append(speed)
                    texts[mode] = text
                same[kind] += texts["base"] == texts["spec"]
    total = args.reps * len(REPETITIVE)
    for kind in ("repetitive", "chat"):
        base = pct(speeds[(kind, "base")], 50)
        spec = pct(speeds[(kind, "spec")], 50)
        print(
            f"{kind:>10}: decode tok/s p50 base {base:.1f}, spec {spec:.1f} -> ratio "
            f"{spec / base:.2f}x | identical answers {same[kind]}/{total} | drafted tokens "
            f"{drafts[kind][0]}, accepted {drafts[kind][1]}",
            flush=True,
        )
    print(f"load avg at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
