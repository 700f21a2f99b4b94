"""What the network path costs: the engine in-process vs the same engine behind ``lichen up``.

The same prompts, greedy, N tokens, several repetitions, run alternately (never at
the same time) against

- ``direct``: :class:`lichen.engines.llamacpp.LlamaCppEngine` (xllamacpp) in this process;
- ``server``: llama.cpp's own HTTP server (xllamacpp's ``Server``) as a subprocess with
  the same settings, called over the same OpenAI streaming API by the same client:
  what calling the engine's own server costs, socket and client included;
- ``lichen``: ``lichen up`` started as a subprocess with the same model, threads, slots
  and context, called over its OpenAI HTTP API (streaming), so each token crosses
  llama.cpp -> node agent -> in-process link -> tracker -> router -> gateway -> SSE.

Prints TTFT p50/p95 and decode tokens/s for each path, and Lichen's ratios to both
``direct`` (no HTTP at all: the strictest baseline) and ``server`` (the engine's own
API, the like-for-like one), with the conditions (CPU, cores, threads, model,
repetitions, load). Not a test: numbers only.

    .venv/bin/python bench/overhead.py --reps 5 --tokens 64 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lichen.engines.base import Delta, Finish
from lichen.engines.llamacpp import LlamaCppEngine, LlamaModelConfig
from lichen.models import InstalledModel, ModelStore, pull
from lichen.wire.messages import ChatMessage, GenerationRequest, SamplingParams

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS_DIR = REPO / ".cache" / "models"

PROMPTS = [
    "Write a long story about a dragon who learns to paint.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a walk through a busy market in a small coastal town.",
    "Write a detailed recipe for bread, with every step explained.",
]


# --- measurements ---------------------------------------------------------------------


@dataclass
class Run:
    """One request: when its first token came, when its last came, how many tokens."""

    ttft_s: float
    total_s: float
    tokens: int
    last_token_s: float

    @property
    def decode_tps(self) -> float:
        """Tokens after the first, over the time they took (the steady decode rate)."""
        span = self.last_token_s - self.ttft_s
        return (self.tokens - 1) / span if self.tokens > 1 and span > 0 else 0.0


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def request_for(prompt: str, tokens: int) -> GenerationRequest:
    return GenerationRequest(
        kind="chat",
        model="",  # filled in by the caller
        messages=[ChatMessage(role="user", content=prompt)],
        params=SamplingParams(max_tokens=tokens, temperature=0.0),
    )


async def run_direct(engine: LlamaCppEngine, model: str, prompt: str, tokens: int) -> Run:
    request = request_for(prompt, tokens)
    request = GenerationRequest(
        kind=request.kind, model=model, messages=request.messages, params=request.params
    )
    started = time.perf_counter()
    first = last = 0.0
    count = 0
    async for event in engine.generate(request):
        now = time.perf_counter()
        if isinstance(event, Delta) and event.text:
            first = first or now
            last = now
        elif isinstance(event, Finish):
            count = event.usage.completion_tokens
    done = time.perf_counter()
    return Run(first - started, done - started, count, last - started)


async def run_http(client: httpx.AsyncClient, model: str, prompt: str, tokens: int) -> Run:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = 0.0
    count = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            now = time.perf_counter()
            if payload.get("choices") and payload["choices"][0]["delta"].get("content"):
                first = first or now
                last = now
            if payload.get("usage"):
                count = payload["usage"]["completion_tokens"]
    done = time.perf_counter()
    return Run(first - started, done - started, count, last - started)


# --- the two systems under test -------------------------------------------------------


def resolve_model(spec: str, models_dir: Path) -> InstalledModel:
    store = ModelStore(models_dir)
    try:
        return store.resolve(spec)
    except Exception:
        return pull(spec, store)


@asynccontextmanager
async def direct_engine(
    model: InstalledModel, *, threads: int, batch_threads: int, parallel: int, ctx_size: int
) -> AsyncIterator[LlamaCppEngine]:
    engine = await LlamaCppEngine.start(
        [
            LlamaModelConfig(
                name=model.name,
                path=model.path,
                sha256=model.sha256,
                parallel=parallel,
                ctx_size=ctx_size,
                threads=threads,
                batch_threads=batch_threads,
            )
        ]
    )
    try:
        yield engine
    finally:
        await engine.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_SERVER_SCRIPT = """
import sys, xllamacpp
path, threads, batch, parallel, ctx = sys.argv[1:]
params = xllamacpp.CommonParams()
params.model.path = path
params.n_parallel = int(parallel)
params.n_ctx = int(ctx)
params.cpuparams.n_threads = int(threads)
params.cpuparams_batch.n_threads = int(batch)
params.n_threads_http = int(parallel) + 1  # its default (cores) would queue streams
params.warmup = False
params.verbosity = -1
server = xllamacpp.Server(params)
print(str(server.listening_address).rstrip("/"), flush=True)
sys.stdin.read()  # serve until the benchmark closes our stdin
"""


@contextmanager
def llama_server(
    model: InstalledModel, *, threads: int, batch_threads: int, parallel: int, ctx_size: int
) -> Iterator[str]:
    """llama.cpp's own HTTP server (xllamacpp) as a subprocess; yields its base URL."""
    argv = [sys.executable, "-c", _SERVER_SCRIPT, str(model.path), str(threads)]
    argv += [str(batch_threads), str(parallel), str(ctx_size)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"llama.cpp's server did not start (exit {proc.poll()})")
        yield url
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def lichen_up(
    model: InstalledModel,
    models_dir: Path,
    *,
    threads: int,
    batch_threads: int,
    parallel: int,
    ctx_size: int,
    log_level: str = "WARNING",
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """``lichen up`` as a subprocess with the same engine settings (plus ``env``, other
    ``LICHEN_*`` settings); yields its base URL. Every bench that needs one uses this."""
    tmp = Path(tempfile.mkdtemp(prefix="lichen-bench-"))
    port = _free_port()
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("LICHEN_")}
    environ |= {
        "LICHEN_THREADS": str(threads),
        "LICHEN_BATCH_THREADS": str(batch_threads),
        "LICHEN_PARALLEL": str(parallel),
        "LICHEN_CTX_SIZE": str(ctx_size),
        "LICHEN_MODELS_DIR": str(models_dir),
        "LICHEN_LOG_LEVEL": log_level,
        "XDG_DATA_HOME": str(tmp / "xdg"),
    } | (env or {})
    lichen = Path(sys.executable).parent / "lichen"
    argv = [str(lichen)] if lichen.exists() else [sys.executable, "-m", "lichen.cli.main"]
    argv += ["up", "--port", str(port), "--data-dir", str(tmp / "data"), "--model", model.name]
    log = (tmp / "up.log").open("wb")
    proc = subprocess.Popen(
        argv, env=environ, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"lichen up exited: {(tmp / 'up.log').read_text()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("lichen up did not become healthy in 120 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


# --- conditions -----------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def conditions(args: argparse.Namespace, model: InstalledModel, extra: dict[str, Any]) -> str:
    try:
        import xllamacpp

        xver = getattr(xllamacpp, "__version__", "?")
    except ImportError:
        xver = "?"
    load = os.getloadavg()
    lines = [
        f"date          {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"command       {' '.join([Path(sys.executable).name, *sys.argv])}",
        f"cpu           {cpu_model()} x {os.cpu_count()} logical cores",
        f"load avg      {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min, at start)",
        f"python        {platform.python_version()}  xllamacpp {xver}",
        f"model         {model.name} ({model.path.name}, sha256 {model.sha256[:12]})",
        f"engine        threads {args.threads}, batch threads {args.batch_threads}, "
        f"parallel slots {args.parallel}, ctx {args.ctx_size}",
    ]
    lines += [f"{k:<13} {v}" for k, v in extra.items()]
    return "\n".join(lines)


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="catalog name or GGUF path")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-threads", type=int, default=0, help="0 = same as --threads")
    parser.add_argument("--parallel", type=int, default=8, help="parallel slots")
    parser.add_argument("--ctx-size", type=int, default=16384)
    parser.add_argument("--tokens", type=int, default=64, help="max_tokens per request")


# --- the benchmark --------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_engine_args(parser)
    parser.add_argument("--reps", type=int, default=5, help="repetitions of the prompt set")
    args = parser.parse_args()
    args.batch_threads = args.batch_threads or args.threads
    model = resolve_model(args.model, args.models_dir)
    engine_opts = {
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
                "workload": f"{len(PROMPTS)} chat prompts x {args.reps} reps, greedy, "
                f"max_tokens {args.tokens}, one request at a time, the three paths "
                "taking turns in a rotating order",
            },
        ),
        flush=True,
    )
    runs: dict[str, list[Run]] = {"direct": [], "server": [], "lichen": []}
    with (
        lichen_up(model, args.models_dir, **engine_opts) as url,
        llama_server(model, **engine_opts) as server_url,
    ):
        async with (
            direct_engine(model, **engine_opts) as engine,
            httpx.AsyncClient(base_url=url, timeout=300) as client,
            httpx.AsyncClient(base_url=server_url, timeout=300) as server,
        ):

            async def one(path: str, prompt: str, tokens: int) -> Run:
                if path == "direct":
                    return await run_direct(engine, model.name, prompt, tokens)
                return await run_http(
                    client if path == "lichen" else server, model.name, prompt, tokens
                )

            await warm_up(runs, one)
            await take_turns(runs, one, reps=args.reps, tokens=args.tokens)
    print(report(runs))


OnePath = Callable[[str, str, int], Awaitable[Run]]  # (path, prompt, max tokens) -> Run


async def warm_up(runs: dict[str, list[Run]], one: OnePath) -> None:
    """One short request per path: first-load effects and connection set-up, not measured."""
    for path in runs:
        await one(path, PROMPTS[0], 8)


async def take_turns(runs: dict[str, list[Run]], one: OnePath, *, reps: int, tokens: int) -> None:
    """``reps`` rounds of :data:`PROMPTS`, each prompt on every path of ``runs`` one after
    another (never at once) in an order that rotates, so slow drifts hit every path."""
    paths = list(runs)
    for rep in range(reps):
        for i, prompt in enumerate(PROMPTS):
            turn = (rep * len(PROMPTS) + i) % len(paths)
            for path in paths[turn:] + paths[:turn]:
                runs[path].append(await one(path, prompt, tokens))
        print(f"rep {rep + 1}/{reps} done", file=sys.stderr, flush=True)


def path_stats(runs: dict[str, list[Run]]) -> dict[str, dict[str, float]]:
    """Per path: run count, mean tokens, TTFT p50/p95 (ms), decode tok/s p50 and mean."""
    stats = {}
    for path, rs in runs.items():
        ttft = [r.ttft_s * 1000 for r in rs]
        tps = [r.decode_tps for r in rs if r.decode_tps > 0]
        stats[path] = {
            "n": len(rs),
            "tokens": statistics.mean(r.tokens for r in rs),
            "ttft_p50": pct(ttft, 50),
            "ttft_p95": pct(ttft, 95),
            "tps_p50": pct(tps, 50),
            "tps_mean": statistics.mean(tps) if tps else float("nan"),
        }
    return stats


def stats_table(stats: dict[str, dict[str, float]]) -> list[str]:
    rows = [
        f"\n{'path':<8} {'runs':>5} {'tokens':>7} {'TTFT p50':>10} {'TTFT p95':>10} "
        f"{'decode tok/s p50':>17} {'mean':>7}"
    ]
    for path, s in stats.items():
        rows.append(
            f"{path:<8} {s['n']:>5} {s['tokens']:>7.1f} {s['ttft_p50']:>8.1f}ms "
            f"{s['ttft_p95']:>8.1f}ms {s['tps_p50']:>17.1f} {s['tps_mean']:>7.1f}"
        )
    return rows


def compare(
    runs: dict[str, list[Run]],
    base: str,
    path: str = "lichen",
    *,
    ratio_target: float = 0.98,
    ttft_target_ms: float = 5.0,
) -> list[str]:
    """``path`` against ``base``: decode tok/s ratio and TTFT added, by p50 and paired."""
    stats = path_stats({base: runs[base], path: runs[path]})
    d, n = stats[base], stats[path]
    ratio = n["tps_p50"] / d["tps_p50"]
    added = n["ttft_p50"] - d["ttft_p50"]
    # Paired: each run against the base run of the same prompt and repetition,
    # taken back to back, so slow drifts in machine load cancel out.
    pairs = list(zip(runs[base], runs[path], strict=True))
    paired_ratio = pct([b.decode_tps / a.decode_tps for a, b in pairs if a.decode_tps], 50)
    paired_added = pct([(b.ttft_s - a.ttft_s) * 1000 for a, b in pairs], 50)
    name = f"{path}/{base}"
    return [
        "",
        f"decode tok/s ratio {name + ' (p50):':<22} {ratio:.3f}   target >= {ratio_target}  "
        f"{'MET' if ratio >= ratio_target else 'MISSED'}",
        f"TTFT added over {base + ' (p50):':<25} {added:+.1f} ms   target <= "
        f"{ttft_target_ms:g} ms  {'MET' if added <= ttft_target_ms else 'MISSED'}",
        f"TTFT ratio {name + ' (p50):':<30} {n['ttft_p50'] / d['ttft_p50']:.3f}   "
        f"(p95 {n['ttft_p95'] - d['ttft_p95']:+.1f} ms)",
        f"paired medians (same prompt, back to back): decode ratio {paired_ratio:.3f}, "
        f"TTFT added {paired_added:+.1f} ms",
    ]


def report(runs: dict[str, list[Run]]) -> str:
    rows = stats_table(path_stats(runs))
    for base in [b for b in ("direct", "server") if b in runs]:
        rows += compare(runs, base)
    rows.append(f"load avg at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return "\n".join(rows)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up like Ctrl-C
    asyncio.run(main())
