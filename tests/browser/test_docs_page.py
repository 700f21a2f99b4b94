"""``/docs`` renders offline: Swagger UI from the package's own assets, no third party."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from harness import Harness, LichenProcess
from playwright.sync_api import Page, Route

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def up(harness: Harness) -> LichenProcess:
    """A private network: its operator surfaces (/docs) are open."""
    return harness.up()


def test_docs_render_without_leaving_the_gateway(
    up: LichenProcess, page: Page, screenshot: Callable[[Page, str], Path]
) -> None:
    gateway = urlsplit(up.url).netloc
    elsewhere: list[str] = []

    def only_the_gateway(route: Route) -> None:
        if urlsplit(route.request.url).netloc == gateway:
            route.continue_()
        else:  # a CDN, fonts, analytics: nothing may leave
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_gateway)
    page.goto(f"{up.url}/docs")
    page.wait_for_selector(".opblock-summary-path")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/api/chat"):
        assert any(path in shown for shown in paths), (path, paths)
    page.locator(".opblock-summary-path", has_text="/v1/messages").first.click()
    page.wait_for_selector(".opblock-body")
    screenshot(page, "api-docs")
    assert elsewhere == []
