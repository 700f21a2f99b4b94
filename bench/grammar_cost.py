"""Where grammar work goes for a large ``response_format`` JSON schema (issue 10).

For enum schemas of growing size, on one llama.cpp engine (xllamacpp, SmolLM2,
one slot busy at a time), prints:

- ``convert_s``: ``xllamacpp.json_schema_to_grammar`` in the calling thread
  (what a node can do, and bound, before the engine loop sees the request);
- ``first_chunk_s``: from handing the request to llama.cpp to its first chunk,
  which includes compiling the grammar *inside the engine loop* (every other
  request on the node waits meanwhile);
- ``total_s``: the whole request (a few tokens).

Not a test: numbers only.

    .venv/bin/python bench/grammar_cost.py --model .cache/models/smollm2-135m/*.gguf \\
        --sizes 0 100 500 1000 2000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _report import cpu_model


def _server(model: Path, threads: int) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.n_parallel = 2
    params.n_ctx = 2048
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.warmup = False
    params.verbosity = -1
    params.api_keys = [secrets.token_hex(16)]
    return xllamacpp.Server(params)


def _measure(server: Any, size: int, max_tokens: int) -> tuple[float, float, float]:
    import xllamacpp

    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "pick one"}],
        "max_tokens": max_tokens,
        "stream": True,
        "temperature": 0,
    }
    convert = 0.0
    if size:
        schema = {"enum": [f"value-{i:05d}-padding" for i in range(size)]}
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "choice", "schema": schema},
        }
        started = time.perf_counter()
        xllamacpp.json_schema_to_grammar(json.dumps(schema))
        convert = time.perf_counter() - started
    first: list[float] = []
    started = time.perf_counter()

    def on_chunk(_chunk: Any) -> bool:
        if not first:
            first.append(time.perf_counter() - started)
        return False

    server.handle_chat_completions(body, on_chunk)
    total = time.perf_counter() - started
    return convert, (first[0] if first else total), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="GGUF file")
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 100, 500, 1000, 2000])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=4)
    args = parser.parse_args()
    server = _server(args.model, args.threads)
    load = os.getloadavg()
    print(
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {os.cpu_count()} cores, "
        f"threads {args.threads}, model {args.model.name}, max_tokens {args.max_tokens}, "
        f"load {load[0]:.2f}"
    )
    print("| enum values | schema bytes | convert_s | first_chunk_s | total_s |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        convert, first, total = _measure(server, size, args.max_tokens)
        schema_bytes = len(json.dumps({"enum": [f"value-{i:05d}-padding" for i in range(size)]}))
        cells = [
            size,
            schema_bytes if size else 0,
            f"{convert:.3f}",
            f"{first:.3f}",
            f"{total:.3f}",
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
    print(f"# load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
