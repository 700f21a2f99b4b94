"""Audits: how fast each lying mode is caught, how often honest nodes are flagged, the cost.

A real tracker on loopback with the audit machinery (reference: SmolLM2 on llama.cpp),
nodes joining over the real wire protocol, each a real llama.cpp engine:

- honest nodes in several shapes (threads, parallel slots), probed while a load
  generator keeps other jobs running on them (batches differ from the reference's);
- dishonest nodes from tests/audit_kit.py: gemma, perturbed, inject, append,
  inflate, random (each a fresh node and a fresh audit record per trial).

Prints, per mode, audits until the first failed audit and until quarantine (median,
max over the trials), the false-positive rate over the honest audits, and the cost
share at the default budget. Run: ``.venv/bin/python bench/audit.py [--honest 500]
[--trials 10] [--modes gemma,perturbed,...]`` (LICHEN_* threads are fixed at 1 here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the lying engines live with the tests

from audit_kit import (  # noqa: E402
    MODES,
    AuditNet,
    LyingEngine,
    gemma_gguf,
    perturbed_gguf,
    start_engine,
    vocabulary,
)
from lichen.audit.scheduler import DEFAULT_BUDGET, PROBE_TOKENS  # noqa: E402
from lichen.engines.base import Delta  # noqa: E402
from lichen.models.verify import hash_file  # noqa: E402
from lichen.wire.messages import ModelInfo  # noqa: E402

MODEL = "smollm2-135m"
SMOLLM = REPO / ".cache" / "models" / MODEL / "SmolLM2-135M-Instruct.Q4_1.gguf"
HONEST_SHAPES = [(1, 1), (1, 4), (2, 2)]  # (threads, parallel slots)
MAX_AUDITS = 10  # per trial: a mode not caught by then counts as missed
PROBE_CAP = 64  # --max-tokens


def _cap_probes(net: AuditNet, seed: int | None = None) -> None:
    """The default probe shapes, every one capped at ``PROBE_CAP`` tokens (bench cost)."""
    net.cap_probes(PROBE_CAP, seed=seed)


async def _load(net: AuditNet, peer_id: str, stop: asyncio.Event) -> int:
    """Keep real-looking jobs running on a node (so its batches mix); returns jobs run."""
    rng = random.Random(peer_id)
    jobs = 0
    while not stop.is_set():
        _, request = net.audits.probes.factory.make(MODEL)
        conn = net.connection(peer_id)
        try:
            job = await conn.start_job(request, deadline_ms=int((time.time() + 300) * 1000))
            async for event in job:
                if not isinstance(event, Delta):
                    break
            await job.aclose()
            jobs += 1
        except Exception:
            await asyncio.sleep(0.1)
        await asyncio.sleep(rng.random() * 0.2)
    return jobs


async def honest(root: Path, sha: str, audits: int) -> dict[str, Any]:
    net = await AuditNet(root / "honest", SMOLLM, sha256=sha).start()
    _cap_probes(net)
    peers: list[str] = []
    stop = asyncio.Event()
    loads: list[asyncio.Task[int]] = []
    verdicts: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for i, (threads, slots) in enumerate(HONEST_SHAPES):
            engine = await start_engine(
                SMOLLM, name=MODEL, sha256=sha, threads=threads, parallel=slots
            )
            peers.append(await net.add_node(engine, f"honest-{i}"))
        loads = [asyncio.create_task(_load(net, p, stop)) for p in peers if p != peers[0]]
        while len(verdicts) < audits:
            batch = [net.probe(p) for p in peers]
            for entry in await asyncio.gather(*batch):
                if entry is not None:
                    verdicts.append(
                        {
                            "passed": entry.passed,
                            "mode": entry.mode,
                            "z": entry.z,
                            "max_margin": entry.max_margin,
                            "positions": entry.positions,
                            "findings": [f.kind for f in entry.findings],
                        }
                    )
            if len(verdicts) % 30 < len(peers):
                flagged = sum(1 for v in verdicts if not v["passed"])
                print(
                    f"  honest audits: {len(verdicts)}, flagged {flagged}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        stop.set()
        load_jobs = sum(await asyncio.gather(*loads)) if loads else 0
        await net.close()
    failed = [v for v in verdicts if not v["passed"]]
    greedy = [v for v in verdicts if v["mode"] == "greedy"]
    sampled = [v for v in verdicts if v["mode"] == "sampled"]
    return {
        "audits": len(verdicts),
        "false_positives": len(failed),
        "greedy": len(greedy),
        "sampled": len(sampled),
        "greedy_max_margin": max((v["max_margin"] for v in greedy), default=0.0),
        "sampled_max_margin": max((v["max_margin"] for v in sampled), default=0.0),
        "sampled_max_z": max((v["z"] for v in sampled), default=0.0),
        "load_jobs": load_jobs,
        "seconds": round(time.perf_counter() - started, 1),
        "failed": failed[:10],
    }


async def lying(root: Path, sha: str, mode: str, trials: int) -> dict[str, Any]:
    claim = ModelInfo(name=MODEL, sha256=sha, engine="llamacpp", slots=2)
    if mode == "gemma":
        path = gemma_gguf(REPO / ".cache")
        real_name, real_sha = "gemma-3-270m", "g" * 64
    elif mode == "perturbed":
        path = perturbed_gguf(SMOLLM, REPO / ".cache" / "smollm2-perturbed.gguf")
        real_name, real_sha = "smollm2-perturbed", "p" * 64
    else:
        path, real_name, real_sha = SMOLLM, MODEL, sha
    vocab = vocabulary(SMOLLM) if mode == "random" else None
    engine = await start_engine(path, name=real_name, sha256=real_sha)
    first: list[int] = []
    quarantined: list[int] = []
    kinds: dict[str, int] = {}
    refused = 0
    try:
        for trial in range(trials):
            net = await AuditNet(root / f"{mode}-{trial}", SMOLLM, sha256=sha).start()
            _cap_probes(net, seed=trial)
            try:
                liar = LyingEngine(
                    engine, mode, claim=claim, vocab=vocab, seed=trial, close_inner=False
                )
                peer = await net.add_node(liar, f"{mode}-{trial}")
                caught = caged = 0
                for n in range(1, MAX_AUDITS + 1):
                    entry = await net.probe(peer)
                    if entry is None:
                        refused += 1  # the job failed: e.g. the tracker's usage bound refused it
                    elif not entry.passed:
                        caught = caught or n
                        for f in entry.findings:
                            kinds[f.kind] = kinds.get(f.kind, 0) + 1
                    if net.audits.quarantined(peer):
                        caged = n
                        assert not net.schedulable(peer), "a quarantined node got a job"
                        break
                first.append(caught or MAX_AUDITS + 1)
                quarantined.append(caged or MAX_AUDITS + 1)
            finally:
                await net.close()
            print(
                f"  {mode} trial {trial}: caught at {first[-1]}, quarantined at {quarantined[-1]}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        await engine.close()
    return {
        "mode": mode,
        "trials": trials,
        "first_median": statistics.median(first),
        "first_max": max(first),
        "quarantine_median": statistics.median(quarantined),
        "quarantine_max": max(quarantined),
        "missed": sum(1 for q in quarantined if q > MAX_AUDITS),
        "jobs_refused": refused,
        "findings": kinds,
    }


def cost_share(tokens_per_s: float) -> float:
    """Share of a node's capacity the default budget spends on probes (by construction)."""
    interval = max(10.0, PROBE_TOKENS / (DEFAULT_BUDGET * tokens_per_s))
    return PROBE_TOKENS / (interval * tokens_per_s)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--honest", type=int, default=500)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--max-tokens", type=int, default=64, help="cap on a probe's max_tokens (cost)"
    )
    args = parser.parse_args()
    sha = hash_file(SMOLLM).sha256
    global PROBE_CAP
    PROBE_CAP = args.max_tokens
    results: dict[str, Any] = {"modes": []}
    with tempfile.TemporaryDirectory(prefix="lichen-audit-bench-") as tmp:
        root = Path(tmp)
        for mode in [m for m in args.modes.split(",") if m]:
            results["modes"].append(await lying(root, sha, mode, args.trials))
        if args.honest:
            results["honest"] = await honest(root, sha, args.honest)
    results["cost_share_default"] = {
        f"{s} tok/s": round(cost_share(s), 4) for s in (10.0, 40.0, 100.0, 1000.0)
    }
    print(
        "mode | trials | first failed audit: median / max | quarantined: median / max | "
        "missed | jobs refused"
    )
    for m in results["modes"]:
        print(
            f"{m['mode']} | {m['trials']} | {m['first_median']} / {m['first_max']} | "
            f"{m['quarantine_median']} / {m['quarantine_max']} | {m['missed']} | "
            f"{m['jobs_refused']}  "
            f"{m['findings']}"
        )
    if "honest" in results:
        h = results["honest"]
        print(
            f"honest: {h['false_positives']} flagged of {h['audits']} audits "
            f"({h['greedy']} greedy, {h['sampled']} sampled; max greedy margin "
            f"{h['greedy_max_margin']}, max sampled margin {h['sampled_max_margin']}, "
            f"max z {h['sampled_max_z']}; {h['load_jobs']} load jobs; {h['seconds']} s)"
        )
    print(f"cost share at the default budget: {results['cost_share_default']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    asyncio.run(main())
