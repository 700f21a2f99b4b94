"""``lichen up``'s own node joins its tracker over the in-process link: the whole
protocol (handshake, manifest, jobs, goodbye, refusals) without a socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fakes import FakeEngine, eventually

from lichen.config import Settings
from lichen.errors import ErrorCode, LichenError
from lichen.identity.store import load_identity
from lichen.node.agent import NodeAgent, NodeConfig
from lichen.roles.tracker import TrackerStack, tracker_stack


@contextlib.asynccontextmanager
async def _up_like(
    tmp_path: Path,
) -> AsyncIterator[tuple[TrackerStack, NodeAgent, asyncio.Task[None]]]:
    """A tracker with ``lichen up``'s node: the operator's own identity, on the in-process
    link, joined; stopped on the way out."""
    settings = Settings(data_dir=tmp_path / "tracker", host="127.0.0.1", port=0)
    async with tracker_stack(settings, load_identity(settings.data_dir)) as stack:
        agent = NodeAgent(
            stack.identity,
            FakeEngine(model="alpha"),
            NodeConfig(
                tracker_url=stack.local_node_url,
                name="n1",
                network_key=stack.identity.network_public,
            ),
            dial=stack.tracker.in_process_link,
        )
        task = asyncio.create_task(agent.run())
        try:
            assert await stack.tracker.wait_for_nodes(1, timeout=30)
            yield stack, agent, task
        finally:
            await agent.stop()
            await asyncio.gather(task, return_exceptions=True)


def _chat(stream: bool = False) -> dict[str, object]:
    return {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "stream": stream}


async def test_a_node_in_the_process_serves_and_leaves_over_the_memory_link(
    tmp_path: Path,
) -> None:
    async with _up_like(tmp_path) as (stack, agent, _task):
        conn = stack.tracker.registry.get(agent.identity.peer_id)
        assert conn is not None and conn.link.remote == "in-process"
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
            answer = await client.post("/v1/chat/completions", json=_chat())
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["choices"][0]["message"]["content"]
            assert body["usage"]["completion_tokens"] > 0
            async with client.stream("POST", "/v1/chat/completions", json=_chat(True)) as r:
                lines = [line async for line in r.aiter_lines() if line.startswith("data:")]
            assert lines[-1] == "data: [DONE]" and len(lines) > 2
        await agent.stop()
        await eventually(lambda: len(stack.tracker.registry) == 0, what="the node leaving")


async def test_a_revoked_in_process_node_hears_why_and_stops(tmp_path: Path) -> None:
    async with _up_like(tmp_path) as (stack, agent, task):
        revoked = LichenError(ErrorCode.IDENTITY_REVOKED, "revoked by the operator")
        assert await stack.tracker.disconnect(agent.identity.peer_id, revoked)
        async with asyncio.timeout(30):
            await task  # a fatal refusal ends the agent's loop
        assert agent.fatal is not None and agent.fatal.code is ErrorCode.IDENTITY_REVOKED
        assert len(stack.tracker.registry) == 0
