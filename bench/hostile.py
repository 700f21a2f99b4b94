"""Does the network keep serving under attack? An honest client's TTFT, without and with attackers.

Against a real ``lichen up`` (real SmolLM2) with default limits, applied to loopback
clients too (``LICHEN_LIMIT_LOOPBACK=true``, as behind a reverse proxy on the same
host), in one run:

1. ``quiet``: the honest user (from 127.0.0.1, with the API key it signed up for)
   sends short streamed chat requests one at a time and records each time to first
   token;
2. ``neighbour``: the same while another honest user (127.0.0.4, no key) reads a long
   streamed answer as it comes: what sharing the node with one ordinary user costs;
3. ``streams``, ``schemas``, ``both``: the same, while
   - attacker A (from 127.0.0.2) opens 64 streams asking for long answers and never
     reads a byte of them (the gateway's per-principal concurrency cap refuses the
     ones past it with 429; the accepted ones sit on back-pressure), and
   - attacker B (from 127.0.0.3) keeps sending the most expensive ``response_format``
     JSON schema the gateway's schema limits still accept (checked with Lichen's own
     validator before the run), as many at once as its cap allows;
   first A alone, then B alone, then both together.

Prints the honest TTFT p50/p95 in every phase and the ratio to ``quiet`` (target for
``both``: <= 2x), what the attackers got (accepted / refused), and the conditions.
Not a test: numbers only.

    .venv/bin/python bench/hostile.py --requests 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

from lichen.engines.schema_limits import SchemaLimits, check_schema
from lichen.models import InstalledModel
from overhead import DEFAULT_MODELS_DIR, conditions, lichen_up, pct, resolve_model

HONEST = "127.0.0.1"
STREAMER = "127.0.0.2"
SCHEMER = "127.0.0.3"
NEIGHBOUR = "127.0.0.4"


def worst_schema() -> dict[str, Any]:
    """The costliest schema found within the default limits (measured with llama.cpp here):
    the most alternatives, each an object of optional properties, every enum value used,
    long prefix-sharing enum strings."""
    alternatives = []
    for i in range(16):
        properties: dict[str, Any] = {
            f"a{i}_k0": {"enum": [f"option-{i:02d}-{j}-" + "x" * 200 for j in range(2)]}
        }
        properties |= {f"a{i}_k{j}": {"type": "string"} for j in range(1, 4)}
        alternatives.append({"type": "object", "properties": properties})
    return {"anyOf": alternatives}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lichen_up_limited(
    model: InstalledModel, args: argparse.Namespace
) -> AbstractContextManager[str]:
    """``lichen up`` with per-address limits applied to loopback clients too."""
    return lichen_up(
        model,
        args.models_dir,
        threads=args.threads,
        batch_threads=args.threads,
        parallel=args.parallel,
        ctx_size=args.ctx_size,
        # As behind a reverse proxy on the host; the honest key may ask more than 60 times a
        # minute (the attackers have no key); plus --env.
        env={"LICHEN_LIMIT_LOOPBACK": "true", "LICHEN_KEY_REQUESTS_PER_MINUTE": "600"}
        | dict(item.split("=", 1) for item in args.env),
    )


def client_from(address: str, url: str, key: str = "") -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=transport, base_url=url, timeout=300, trust_env=False, headers=headers
    )


async def honest_key(url: str) -> str:
    """The honest user signs up and makes an API key (the attackers stay anonymous)."""
    async with client_from(HONEST, url) as client:
        password = "honest-user-password-1"
        signed = await client.post(
            "/v1/auth/signup",
            json={"username": "honest", "email": "honest@example.org", "password": password},
        )
        signed.raise_for_status()
        csrf = {"x-csrf-token": signed.json()["csrf_token"]}
        made = await client.post("/v1/account/keys", json={"name": "bench"}, headers=csrf)
        made.raise_for_status()
        return str(made.json()["key"])


async def honest_ttft(client: httpx.AsyncClient, model: str, tokens: int) -> float:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    ttft = 0.0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"honest request refused: {response.status_code}")
        async for line in response.aiter_lines():
            if ttft or not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                ttft = time.perf_counter() - started
    if not ttft:
        raise RuntimeError("the honest answer had no text")
    return ttft


async def honest_phase(
    url: str, key: str, model: str, n: int, tokens: int, label: str
) -> list[float]:
    times = []
    async with client_from(HONEST, url, key) as client:
        for i in range(n):
            times.append(await honest_ttft(client, model, tokens))
            print(
                f"{label} {i + 1}/{n}: TTFT {times[-1] * 1000:.0f} ms", file=sys.stderr, flush=True
            )
    return times


async def never_reading_streams(
    url: str, model: str, count: int, held: list[asyncio.StreamWriter], stats: Counter[str]
) -> None:
    """Open ``count`` streams from STREAMER; read only each status line, then nothing."""
    host, _, port = url.removeprefix("http://").partition(":")
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Write a very long story."}],
            "max_tokens": 1500,
            "stream": True,
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, int(port), local_addr=(STREAMER, 0))
        writer.write(head + body)
        status = (await reader.readline()).split()[1].decode()
        stats[f"stream {status}"] += 1
        if status == "200":
            held.append(writer)  # never read again
        else:
            writer.close()

    await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)


async def neighbour_reading(url: str, model: str, stop: asyncio.Event) -> None:
    """Another honest user: long streamed answers, read as they come, until ``stop``."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Write a very long story."}],
        "max_tokens": 1500,
        "stream": True,
    }
    async with client_from(NEIGHBOUR, url) as client:
        while not stop.is_set():
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                async for _line in response.aiter_lines():
                    if stop.is_set():
                        break


async def schema_flood(url: str, model: str, stop: asyncio.Event, stats: Counter[str]) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "worst", "schema": worst_schema()}}
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Fill in the form."}],
        "max_tokens": 4,
        "response_format": fmt,
    }

    async def worker(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                response = await client.post("/v1/chat/completions", json=body)
                stats[f"schema {response.status_code}"] += 1
                if response.status_code == 429:
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            except httpx.HTTPError as exc:
                stats[f"schema {type(exc).__name__}"] += 1

    async with client_from(SCHEMER, url) as client:
        await asyncio.gather(*(worker(client) for _ in range(6)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--ctx-size", type=int, default=16384)
    parser.add_argument("--requests", type=int, default=12, help="honest requests per phase")
    parser.add_argument("--tokens", type=int, default=8, help="honest max_tokens")
    parser.add_argument("--streams", type=int, default=64, help="attacker A's streams")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for lichen up")
    args = parser.parse_args()
    args.batch_threads = args.threads
    check_schema(worst_schema(), SchemaLimits(), "response_format")  # accepted by the gateway
    model = resolve_model(args.model, args.models_dir)
    print(
        conditions(
            args,
            model,
            {
                "workload": f"honest: {args.requests} streamed chats, max_tokens {args.tokens}, "
                f"one at a time; attack: {args.streams} never-read streams + a schema flood; "
                f"extra env {args.env or 'none'}",
                "schema": f"{len(json.dumps(worst_schema()))} bytes: anyOf 16 objects, "
                "64 optional properties, 32 enum values of 210 characters",
            },
        ),
        flush=True,
    )
    stats: Counter[str] = Counter()
    phases: dict[str, list[float]] = {}
    with lichen_up_limited(model, args) as url:
        key = await honest_key(url)

        async def measure(label: str) -> None:
            phases[label] = await honest_phase(
                url, key, model.name, args.requests, args.tokens, label
            )

        async def flooding(label: str) -> None:
            stop = asyncio.Event()
            flood = asyncio.create_task(schema_flood(url, model.name, stop, stats))
            await asyncio.sleep(2)  # let the flood get going before measuring
            await measure(label)
            stop.set()
            await flood

        await honest_phase(url, key, model.name, 2, args.tokens, "warm-up")  # not measured
        await measure("quiet")
        stop_reading = asyncio.Event()
        neighbour = asyncio.create_task(neighbour_reading(url, model.name, stop_reading))
        await asyncio.sleep(1)  # its answer is under way
        await measure("neighbour")  # one ordinary user sharing the node: the reference
        stop_reading.set()
        await neighbour
        held: list[asyncio.StreamWriter] = []
        await never_reading_streams(url, model.name, args.streams, held, stats)
        await measure("streams")  # attacker A alone
        for writer in held:
            writer.close()
        await asyncio.sleep(2)  # the gateway sees A leave and cancels its jobs
        await flooding("schemas")  # attacker B alone
        held = []
        await never_reading_streams(url, model.name, args.streams, held, stats)
        await flooding("both")  # A and B together: the number the issue asks for
        for writer in held:
            writer.close()
    quiet = phases["quiet"]
    print()
    for label, times in phases.items():
        p50, p95 = pct(times, 50), pct(times, 95)
        ratio = f"{p50 / pct(quiet, 50):5.2f}x" if label != "quiet" else "     "
        print(
            f"honest TTFT {label:<9} p50 {p50 * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  "
            f"p50 vs quiet {ratio}"
        )
    both = pct(phases["both"], 50) / pct(quiet, 50)
    print(f"ratio attacked (both) / quiet, p50: {both:.2f}x (target <= 2x)")
    print("attackers: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.items())))


if __name__ == "__main__":
    asyncio.run(main())
