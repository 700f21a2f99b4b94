"""Fixtures shared by every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Throwaway PostgreSQL and Redis on loopback, and per-test databases (tests/services.py).
pytest_plugins = ["services"]


@pytest.fixture(autouse=True)
def lichen_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Hermetic settings: no test reads a developer's ``LICHEN_*`` variables or config.

    Every ``LICHEN_*`` variable is removed (pydantic-settings matches names without
    regard to case, so lower-case ones go too), ``LICHEN_DATA_DIR`` and ``XDG_DATA_HOME``
    point into a fresh temporary directory, and the data dir is returned (not created).
    """
    for name in list(os.environ):
        if name.upper().startswith("LICHEN_"):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("lichen-home")
    data_dir = home / "data"
    monkeypatch.setenv("LICHEN_DATA_DIR", str(data_dir))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg"))
    return data_dir
