"""Fixtures shared by the integration tests.

``net``: a :class:`fakes.LocalNetwork` (tracker, gateway and web UI
in-process; nodes added by each test), stopped after the test. A module that needs
other settings overrides ``net_options`` with the LocalNetwork keyword arguments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fakes import LocalNetwork


@pytest.fixture
def net_options() -> dict[str, Any]:
    """Keyword arguments for the ``net`` fixture's LocalNetwork (none: its defaults)."""
    return {}


@pytest.fixture
async def net(tmp_path: Path, net_options: dict[str, Any]) -> AsyncIterator[LocalNetwork]:
    network = await LocalNetwork(tmp_path, **net_options).start()
    try:
        yield network
    finally:
        await network.close()
