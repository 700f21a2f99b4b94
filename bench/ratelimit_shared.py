"""What shared limits cost per request: in-process counters vs a real Redis on loopback.

Each simulated request does what the request guard does for a signed-in key with
every limit on: ``admit`` (daily tokens read + a request counted this minute),
a lease for requests in flight (``hold``), then ``drop`` and ``count_tokens``:
five store calls, through :class:`lichen.ratelimit.RateLimiter`. Run one after
another (latency per request) and ``--concurrency`` at a time from one process
(throughput of one gateway process). A ``redis-server`` on a free loopback port is
started and stopped by the benchmark (persistence off).

    .venv/bin/python bench/ratelimit_shared.py --requests 5000 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

import redis.asyncio as redis

from lichen.ratelimit import Backend, Limits, MemoryBackend, RateLimiter, RedisBackend

LIMITS = Limits(requests_per_minute=10**9, tokens_per_day=10**12)  # never refuses
LEASE_S = 360.0


async def one_request(limiter: RateLimiter, subject: str) -> None:
    await limiter.admit(subject, LIMITS)
    lease = secrets.token_hex(12)
    await limiter.hold(subject, lease, 10**6, LEASE_S)
    await limiter.drop(subject, lease)
    await limiter.count_tokens(subject, LIMITS, 100)


async def measure(backend: Backend, requests: int, concurrency: int) -> dict[str, float]:
    limiter = RateLimiter(backend)
    for i in range(100):  # warm up (connection pool, script cache)
        await one_request(limiter, f"key:warm{i % 4}")
    latencies: list[float] = []
    for i in range(requests):
        started = time.perf_counter()
        await one_request(limiter, f"key:{i % 100}")
        latencies.append(time.perf_counter() - started)
    queue = iter(range(requests))

    async def worker() -> None:
        for i in queue:
            await one_request(limiter, f"key:{i % 100}")

    started = time.perf_counter()
    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    await limiter.aclose()
    latencies.sort()
    return {
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
        "req_per_s": requests / wall,
        "cpu_us_per_req": cpu / requests * 1e6,
    }


def start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found (apt-get install -y redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="lichen-bench-redis-")
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", workdir, "--daemonize", "no", "--loglevel", "warning"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"redis://127.0.0.1:{port}/0", workdir


async def wait_for_redis(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for _ in range(400):
            try:
                await client.ping()
                return
            except (OSError, redis.ConnectionError):
                await asyncio.sleep(0.05)
        raise SystemExit("redis-server did not start")
    finally:
        await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    proc, url, workdir = start_redis()
    try:
        await wait_for_redis(url)
        memory = await measure(MemoryBackend(), args.requests, args.concurrency)
        shared = await measure(
            RedisBackend.from_url(url, prefix=f"bench:{secrets.token_hex(4)}:"),
            args.requests,
            args.concurrency,
        )
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{args.requests} requests (5 store calls each: admit x2, hold, drop, count_tokens), "
        f"concurrency {args.concurrency}, one process, {os.cpu_count()} CPUs, "
        "redis-server on loopback"
    )
    print(f"{'backend':<8} {'p50 us':>8} {'p99 us':>8} {'req/s':>9} {'CPU us/req':>11}")
    for name, row in (("memory", memory), ("redis", shared)):
        print(
            f"{name:<8} {row['p50_us']:>8.0f} {row['p99_us']:>8.0f} {row['req_per_s']:>9.0f} "
            f"{row['cpu_us_per_req']:>11.0f}"
        )
    print(f"redis/memory p50 ratio: {shared['p50_us'] / memory['p50_us']:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
