"""End-to-end fixtures: the real model, pulled once, and the process harness.

The model is pulled with the real ``lichen models pull`` into ``<repo>/.cache/models``
(git-ignored), so repeated local runs do not download it again; every process the
harness starts shares that models dir through ``LICHEN_MODELS_DIR``.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import DEFAULT_MODEL, REPO, Harness, lichen_argv, scrubbed_env

PULL_TIMEOUT_S = 600


def _shared_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = REPO / ".cache" / "models"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if os.access(cache, os.W_OK):
            return cache
    except OSError:
        pass
    return tmp_path_factory.mktemp("models")  # a read-only checkout: pull per session


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir holding the default model, via ``lichen models pull`` (a no-op when present)."""
    root = _shared_models_dir(tmp_path_factory)
    log = tmp_path_factory.mktemp("pull") / "pull.log"
    env = scrubbed_env({"LICHEN_MODELS_DIR": str(root), "LICHEN_DATA_DIR": str(log.parent)})
    # Concurrent test runs on one checkout share the cache: one pulls, the others wait.
    with (root.parent / "models.lock").open("w") as lock, log.open("wb") as out:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(
            [*lichen_argv(), "models", "pull", DEFAULT_MODEL],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=PULL_TIMEOUT_S,
            check=False,
        )
    assert result.returncode == 0, log.read_text(errors="replace")
    assert any(root.glob(f"{DEFAULT_MODEL}/*.gguf")), f"no GGUF under {root}"
    return root


@pytest.fixture
def harness(tmp_path: Path, models_dir: Path) -> Iterator[Harness]:
    """A harness for one test; everything it started is stopped afterwards."""
    with Harness(tmp_path, models_dir=models_dir) as h:
        yield h


@pytest.fixture(scope="module")
def module_harness(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Harness]:
    """A harness shared by a module's tests (one process, many tests, less CI time)."""
    with Harness(tmp_path_factory.mktemp("e2e"), models_dir=models_dir) as h:
        yield h
