"""Test doubles for in-process network tests: a scripted engine and a local network.

``FakeEngine`` implements :class:`lichen.engines.base.Engine` with a fixed answer
(a list of tokens), an optional delay per token and an optional failure after N
tokens. It behaves like a greedy model: given a ``continuation`` (the text a
previous node already streamed) it carries on from exactly there, so resume can
be checked for duplicated or lost text. It counts what it produced and whether
its stream was closed early (cancelled).

``LocalNetwork`` runs the real tracker and gateway on a loopback uvicorn (port 0)
and connects real :class:`~lichen.node.agent.NodeAgent` instances over the real
WebSocket wire protocol, each with its own identity in a temp dir.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from lichen.engines.base import Delta, EngineEvent, EngineLoad, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.identity.store import KEYS_DIR, Identity, load_identity
from lichen.node.agent import NodeAgent, NodeConfig
from lichen.roles.gateway import GatewayOptions, build_gateway
from lichen.server import HttpServer
from lichen.storage.repositories import RequestRecord
from lichen.tracker.admission import OwnerAdmission
from lichen.tracker.connection import NodeConnection
from lichen.tracker.service import NODE_PATH, TrackerService
from lichen.wire.messages import GenerationRequest, ModelInfo, Usage

MODEL = "fake-model"
ANSWER = ["Hello", ",", " this", " is", " a", " scripted", " answer", "."]

Failure = Literal["raise", "crash", "stall"]


async def eventually(
    predicate: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition"
) -> None:
    """Wait until ``predicate()`` holds, or fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class FakeEngine:
    """A scripted engine. ``failure`` after ``fail_after`` tokens of one job:

    - ``raise``: raise ``LichenError(NODE_FAILED)`` (the node reports a job error)
    - ``crash``: raise ``RuntimeError`` (an engine bug; the node reports ENGINE_ERROR)
    - ``stall``: set :attr:`stalled` and hang until closed (the test kills the node)
    """

    kind = "fake"

    def __init__(
        self,
        tokens: list[str] | None = None,
        *,
        model: str = MODEL,
        delay_s: float = 0.0,
        fail_after: int | None = None,
        failure: Failure = "raise",
        slots: int = 4,
        prompt_tokens: int = 5,
    ) -> None:
        self.tokens = list(ANSWER if tokens is None else tokens)
        self.model = model
        self.delay_s = delay_s
        self.fail_after = fail_after
        self.failure: Failure = failure
        self.slots = slots
        self.prompt_tokens = prompt_tokens
        self.requests: list[GenerationRequest] = []
        self.produced = 0  # deltas yielded, over all jobs
        self.active = 0  # generations in progress
        self.finished = 0  # generations that reached their Finish
        self.cancelled = 0  # generations closed before their Finish
        self.stalled = asyncio.Event()
        self.closed = False

    # --- Engine protocol ---

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(name=self.model, sha256="0" * 64, engine=self.kind, slots=self.slots)]

    def load(self) -> EngineLoad:
        return EngineLoad(
            free_slots=max(0, self.slots - self.active),
            queue_depth=max(0, self.active - self.slots),
            tokens_per_s=100.0,
        )

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[EngineEvent, None]:
        if request.model != self.model:
            raise LichenError(ErrorCode.MODEL_NOT_FOUND, f"model {request.model!r} is not here")
        self.requests.append(request)
        start = self._position(request.continuation)
        limit = request.params.max_tokens
        produced = 0
        done = False
        self.active += 1
        try:
            position = start
            while position < len(self.tokens) and (limit is None or produced < limit):
                if self.fail_after is not None and produced >= self.fail_after:
                    await self._fail()
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                yield Delta(self.tokens[position])
                produced += 1
                self.produced += 1
                position += 1
            reason = "stop" if position >= len(self.tokens) else "length"
            done = True
            self.finished += 1
            # Like llama.cpp, the continuation counts as prompt on the resuming node.
            yield Finish(reason, Usage(self.prompt_tokens + start, produced))
        finally:
            self.active -= 1
            if not done:
                self.cancelled += 1

    async def close(self) -> None:
        self.closed = True

    # --- helpers ---

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def _position(self, continuation: str) -> int:
        """How many scripted tokens the continuation covers (it must end on a token)."""
        covered = ""
        for index, token in enumerate(self.tokens):
            if covered == continuation:
                return index
            covered += token
        if covered == continuation:
            return len(self.tokens)
        raise LichenError(ErrorCode.INVALID_REQUEST, "continuation does not match the answer")

    async def _fail(self) -> None:
        if self.failure == "raise":
            raise LichenError(ErrorCode.NODE_FAILED, "scripted node failure")
        if self.failure == "crash":
            raise RuntimeError("scripted engine crash")
        self.stalled.set()
        await asyncio.Event().wait()  # hang until cancelled


@dataclass
class RunningNode:
    agent: NodeAgent
    engine: FakeEngine
    identity: Identity
    task: asyncio.Task[None]

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id


@dataclass
class LocalNetwork:
    """Tracker + gateway on loopback, with nodes joining over the real wire protocol."""

    root: Path
    max_request_bytes: int = 64 * 1024
    timeout_s: float = 30.0
    records: list[RequestRecord] = field(default_factory=list)
    nodes: list[RunningNode] = field(default_factory=list)

    async def start(self) -> LocalNetwork:
        self.identity = load_identity(self.root / "tracker")
        self.tracker = TrackerService(
            network_key=self.identity.network_key,
            admission=OwnerAdmission(self.identity.account_public),
        )
        gateway = build_gateway(  # the gateway role's builder, over the tracker's registry
            GatewayOptions(max_request_bytes=self.max_request_bytes, timeout_s=self.timeout_s),
            registry=self.tracker.registry,
            record=self._record,
        )
        self.completions = gateway.completions
        self.app = gateway.app
        self.app.add_api_websocket_route(NODE_PATH, self.tracker.endpoint)
        await self.tracker.start()
        self.http = HttpServer(self.app, host="127.0.0.1", port=0)
        self.port = await self.http.start()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.AsyncClient(base_url=self.url, timeout=30.0)
        return self

    async def _record(self, record: RequestRecord) -> None:
        self.records.append(record)

    async def add_node(self, engine: FakeEngine, name: str) -> RunningNode:
        """Start a node whose device certificate the tracker's own account signed."""
        node = start_owned_node(
            self.root / name,
            owner_dir=self.root / "tracker",
            port=self.port,
            network_public=self.identity.network_public,
            engine=engine,
            name=name,
        )
        self.nodes.append(node)
        await eventually(
            lambda: self.tracker.registry.get(node.peer_id) is not None,
            what=f"node {name} to join",
        )
        return node

    def connection(self, node: RunningNode) -> NodeConnection:
        conn = self.tracker.registry.get(node.peer_id)
        assert conn is not None, "node is not connected"
        return conn

    async def kill(self, node: RunningNode) -> None:
        """Stop a node abruptly: its jobs are cancelled and its link closes."""
        await node.agent.stop()
        await asyncio.gather(node.task, return_exceptions=True)
        await eventually(
            lambda: self.tracker.registry.get(node.peer_id) is None, what="node to leave"
        )

    async def close(self) -> None:
        await self.client.aclose()
        for node in self.nodes:
            await node.agent.stop()
        await asyncio.gather(*(n.task for n in self.nodes), return_exceptions=True)
        await self.tracker.stop()
        await self.http.stop()
        await self.completions.drain()


def sse_payloads(body: str) -> list[dict[str, Any]]:
    """The JSON payloads of an SSE body; asserts it is well formed and ends with [DONE]."""
    payloads: list[dict[str, Any]] = []
    events = [e for e in body.split("\n\n") if e.strip()]
    assert events, "empty event stream"
    assert events[-1] == "data: [DONE]", events[-1]
    for event in events[:-1]:
        assert event.startswith("data: "), event
        payloads.append(json.loads(event.removeprefix("data: ")))
    return payloads


def streamed_text(payloads: list[dict[str, Any]]) -> str:
    """Concatenated content of chat or completion stream chunks."""
    parts = []
    for payload in payloads:
        for choice in payload.get("choices", []):
            if "delta" in choice:
                parts.append(choice["delta"].get("content") or "")
            else:
                parts.append(choice.get("text") or "")
    return "".join(parts)


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An error answer in exactly OpenAI's shape, with the expected status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert error["code"] == code, error
    return error


def start_owned_node(
    node_dir: Path,
    *,
    owner_dir: Path,
    port: int,
    network_public: bytes,
    engine: FakeEngine,
    name: str,
    **config: Any,
) -> RunningNode:
    """Start a node agent whose device certificate the tracker owner's account key signs."""
    (node_dir / KEYS_DIR).mkdir(parents=True, mode=0o700)
    shutil.copy2(owner_dir / KEYS_DIR / "account.key", node_dir / KEYS_DIR / "account.key")
    identity = load_identity(node_dir, node_name=name)
    agent = NodeAgent(
        identity,
        engine,
        NodeConfig(
            tracker_url=f"ws://127.0.0.1:{port}{NODE_PATH}",
            name=name,
            network_key=network_public,
            backoff_initial_s=0.05,
            **config,
        ),
    )
    task = asyncio.create_task(agent.run(), name=f"node-{name}")
    return RunningNode(agent, engine, identity, task)
