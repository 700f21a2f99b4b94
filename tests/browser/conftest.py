"""Browser fixtures: Debian's Chromium driven by Playwright, against a real ``lichen up``.

The process harness and the shared model come from ``tests/e2e`` (re-exported here,
so one models cache serves both tiers). Chromium is the system package
(``scripts/install.sh --system-deps`` installs it); ``playwright install`` is never
used. Screenshots go to ``artifacts/screenshots/`` for people to look at.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

E2E_DIR = Path(__file__).resolve().parents[1] / "e2e"
sys.path.insert(0, str(E2E_DIR))

from harness import REPO, Harness, LichenProcess  # noqa: E402


def _load_e2e_conftest() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lichen_e2e_conftest", E2E_DIR / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


models_dir = _load_e2e_conftest().models_dir  # the session fixture: the real model, pulled once

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

try:
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
except ImportError:  # pragma: no cover - dev extra missing
    sync_playwright = None  # type: ignore[assignment]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without Chromium or Playwright, browser tests fail in CI and are skipped elsewhere."""
    missing = []
    if sync_playwright is None:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (scripts/install.sh --system-deps)")
    if not missing or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason="browser tests need " + " and ".join(missing))
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Harness]:
    """The module's processes; all stopped when its tests are done."""
    with Harness(tmp_path_factory.mktemp("browser"), models_dir=models_dir) as h:
        yield h


@pytest.fixture(scope="module")
def up(harness: Harness) -> LichenProcess:
    """One ``lichen up`` (public network mode, so an invited second node is admitted)."""
    return harness.up(env={"LICHEN_NETWORK_MODE": "public", "LICHEN_NODE_NAME": "first"})


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/install.sh --system-deps"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    ctx.set_default_timeout(30_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A page that fails the test on any uncaught script error."""
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    assert errors == [], f"script errors on the page: {errors}"


@pytest.fixture
def screenshot() -> Callable[[Page, str], Path]:
    """``screenshot(page, name)`` saves a full-page PNG under artifacts/screenshots/."""

    def save(page: Page, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
