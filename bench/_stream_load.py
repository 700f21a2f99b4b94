"""A load generator for benchmarks: concurrent streamed chat completions over HTTP.

``streams`` workers each send one streamed request after another to their gateway
(worker ``i`` uses ``urls[i % len(urls)]``, so the gateways share the load equally).
After ``warmup_s``, ``on_window`` is called (the caller snapshots CPU times), then
tokens, finished requests and TTFTs are counted for ``window_s``, then ``on_window``
again. Tokens are the ``usage`` the final SSE chunk reports (``include_usage``), counted
when a request finishes inside the window; requests that end short of ``max_tokens``
are counted too. The stream is scanned as raw bytes to keep this process's cost low.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

CONTENT = b'"content":"'
USAGE = re.compile(rb'"completion_tokens":\s*(\d+)')


@dataclass
class LoadResult:
    window_s: float = 0.0
    tokens: int = 0
    requests: int = 0
    errors: int = 0
    chunks: int = 0  # SSE chunks with content (a chunk may carry several tokens)
    short: int = 0  # finished requests whose usage counts other than max_tokens tokens
    tokens_by_url: dict[str, int] = field(default_factory=dict)
    ttft_ms: list[float] = field(default_factory=list)


async def stream_load(
    urls: list[str],
    *,
    model: str,
    streams: int,
    max_tokens: int,
    warmup_s: float,
    window_s: float,
    on_window: Callable[[], None],
) -> LoadResult:
    result = LoadResult(tokens_by_url={u: 0 for u in urls})
    measuring = False
    stopping = False
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    limits = httpx.Limits(max_connections=streams + 8, max_keepalive_connections=streams + 8)

    async def worker(index: int, client: httpx.AsyncClient) -> None:
        base = urls[index % len(urls)]
        url = base + "/v1/chat/completions"
        while not stopping:
            counted = measuring
            t0 = time.perf_counter()
            chunks = 0
            tail = b""
            try:
                async with client.stream("POST", url, json=body) as response:
                    if response.status_code != 200:
                        await response.aread()
                        result.errors += measuring
                        await asyncio.sleep(0.05)
                        continue
                    async for raw in response.aiter_raw():
                        found = raw.count(CONTENT)
                        if found and chunks == 0 and counted:
                            result.ttft_ms.append((time.perf_counter() - t0) * 1000)
                        chunks += found
                        tail = (tail + raw)[-4096:]
            except httpx.HTTPError:
                result.errors += measuring
                await asyncio.sleep(0.05)
                continue
            usage = USAGE.search(tail)
            tokens = int(usage.group(1)) if usage else 0
            if measuring:
                result.requests += 1
                result.tokens += tokens
                result.chunks += chunks
                result.tokens_by_url[base] += tokens
                result.short += tokens != max_tokens

    async with httpx.AsyncClient(timeout=120.0, limits=limits, trust_env=False) as client:
        tasks = [asyncio.create_task(worker(i, client)) for i in range(streams)]
        try:
            await asyncio.sleep(warmup_s)
            on_window()
            measuring = True
            started = time.perf_counter()
            await asyncio.sleep(window_s)
            measuring = False
            result.window_s = time.perf_counter() - started
            on_window()
        finally:
            stopping = True
            await asyncio.gather(*tasks, return_exceptions=True)
    return result
