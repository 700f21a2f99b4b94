"""Helpers for the model-transfer tests: a real tracker stack, nodes, synthetic GGUFs."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from lichen.config import Settings
from lichen.identity.store import Identity, load_identity
from lichen.models.chunks import CHUNK_SIZE
from lichen.models.holdings import Holdings
from lichen.models.network import NetworkModels
from lichen.models.store import ModelStore
from lichen.models.swarm_client import SwarmClient
from lichen.roles.tracker import TrackerStack, tracker_stack
from lichen.tracker.model_routes import ModelService


def gguf_bytes(size: int, seed: int = 0) -> bytes:
    """A fake GGUF (magic + pseudo-random bytes): not loadable, but hashes like a real file."""
    out = bytearray(b"GGUF")
    block = hashlib.sha256(seed.to_bytes(8, "little")).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def write_gguf(path: Path, size: int = 3 * CHUNK_SIZE + 12345, seed: int = 0) -> bytes:
    data = gguf_bytes(size, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Net:
    root: Path
    stack: TrackerStack

    @property
    def models(self) -> ModelService:
        assert self.stack.models is not None
        return self.stack.models

    def identity(self, name: str) -> Identity:
        return load_identity(self.root / name, node_name=name)

    def node(self, name: str, chunk_port: int | None = None) -> NetworkModels:
        """A node's model installer with its own data dir and (empty) models dir."""
        return NetworkModels(
            ModelStore(self.root / name / "models"),
            self.identity(name),
            tracker_url=self.stack.local_node_url,
            network_key=self.stack.identity.network_public,
            chunk_port=chunk_port,
        )

    def client(self, name: str, holdings: Holdings | None = None) -> SwarmClient:
        node = self.node(name)
        return SwarmClient(
            identity=node.identity,
            link_url=node.link_url,
            network_key=node.network_key,
            holdings=holdings or node.holdings,
        )


@contextlib.asynccontextmanager
async def network(root: Path, **settings: object) -> AsyncIterator[Net]:
    values: dict[str, object] = {
        "data_dir": root / "tracker",
        "host": "127.0.0.1",
        "port": 0,
        "network_mode": "public",
        "heartbeat_s": 0.5,
        "admissions_per_ip_hour": 1000,
        "model": "none-seeded",
    } | settings
    os.environ.pop("LICHEN_MODELS_DIR", None)
    async with tracker_stack(
        Settings(**values),  # type: ignore[arg-type]
        load_identity(root / "tracker"),
        gateway=False,
    ) as stack:
        yield Net(root, stack)
