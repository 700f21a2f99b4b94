"""A real tracker stack (the one ``lichen tracker`` / ``lichen up`` build) for hostile-client
tests: settings as given, on loopback, with one node agent on the real wire protocol
whose :class:`~fakes.FakeEngine` records what reached it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fakes import FakeEngine, RunningNode, eventually, start_owned_node

from lichen.config import Settings
from lichen.identity.store import load_identity
from lichen.privacy.policy import preset_text
from lichen.roles.tracker import TrackerStack, tracker_stack
from lichen.tracker.connection import NodeConnection


@dataclass
class HostileStack:
    stack: TrackerStack
    client: httpx.AsyncClient
    engine: FakeEngine
    node: RunningNode

    @property
    def port(self) -> int:
        return self.stack.port

    @property
    def url(self) -> str:
        return self.stack.url

    def connection(self) -> NodeConnection:
        conn = self.stack.tracker.registry.get(self.node.peer_id)
        assert conn is not None, "the node left"
        return conn

    def in_flight(self) -> int:
        """Jobs the tracker counts on the node plus requests the guard counts in flight."""
        acc = self.stack.accounting
        held = acc.guard.concurrency.in_flight() if acc is not None else 0
        return self.connection().state.inflight + held

    async def settled(self) -> None:
        """Wait until nothing is in flight any more (every job and slot released)."""
        await eventually(lambda: self.in_flight() == 0, timeout=10, what="in-flight counts at 0")


@contextlib.asynccontextmanager
async def hostile_stack(
    root: Path, engine: FakeEngine | None = None, *, policy: str | None = None, **settings: Any
) -> AsyncIterator[HostileStack]:
    """The stack with ``settings``; ``policy``: a privacy preset name for its policy file."""
    config = Settings(data_dir=root / "tracker", host="127.0.0.1", port=0, **settings)
    identity = load_identity(config.data_dir)
    if policy is not None:
        (config.data_dir / "policy.toml").write_text(preset_text(policy), encoding="utf-8")
    engine = engine or FakeEngine()
    async with tracker_stack(config, identity) as stack:
        node = start_owned_node(
            root / "n1",
            owner_dir=config.data_dir,
            port=stack.port,
            network_public=identity.network_public,
            engine=engine,
            name="n1",
        )
        try:
            await eventually(
                lambda: stack.tracker.registry.get(node.peer_id) is not None,
                what="the node to join",
            )
            async with httpx.AsyncClient(base_url=stack.url, trust_env=False, timeout=30) as c:
                yield HostileStack(stack, c, engine, node)
        finally:
            await node.agent.stop()
            await asyncio.gather(node.task, return_exceptions=True)


# --- raw HTTP/1.1 over a socket (what httpx will not do: stop mid-upload, lie in headers) ---


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, headers, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def chunked_upload(
    port: int, path: str, total: int, chunk: int = 64 * 1024
) -> tuple[int, dict[str, Any], int]:
    """POST up to ``total`` bytes chunked, stopping as soon as the server answers.

    Returns (status, JSON body of the answer, bytes sent before the answer came).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".encode()
    )
    answer = asyncio.ensure_future(read_response(reader))
    sent = 0
    data = b"a" * chunk
    try:
        while sent < total and not answer.done():
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            try:
                await asyncio.wait_for(writer.drain(), timeout=5)
            except (ConnectionError, TimeoutError):
                break
            sent += len(data)
        status, _, body = await asyncio.wait_for(answer, timeout=10)
    finally:
        answer.cancel()
        writer.close()
    return status, json.loads(body), sent
