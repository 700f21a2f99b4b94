"""/privacy and /feed have one renderer: a tracker with the gateway and web UI and a bare
tracker (``gateway=False``, privacy pages only) serve the same page content for the same
policy and the same kept posts; only the layout's navigation differs.

Both trackers are the real ``tracker_stack`` on loopback, with the ``open`` preset (which
has a public feed) and one public post kept in each database.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from lichen.config import Settings
from lichen.identity.store import load_identity
from lichen.privacy.content import ContentRepository, Exchange, new_deletion_token
from lichen.privacy.policy import parse_policy, preset_text
from lichen.roles.tracker import tracker_stack

CANARY = "policy-pages-canary-7f3a"
HOSTILE = "<script>alert('feed')</script>"
POST = Exchange(
    request_id="req-policy-pages-1",
    created_ms=1_764_547_200_000,  # 2025-12-01 00:00 UTC
    subject=None,
    public=True,
    model="smollm2-135m",
    kind="chat",
    prompt=[{"role": "user", "content": f"say {CANARY}"}, {"role": "user", "content": HOSTILE}],
    completion=f"{CANARY} {HOSTILE}",
    finish_reason="stop",
)


async def _pages(root: Path, *, gateway: bool) -> dict[str, httpx.Response]:
    """GET /privacy, /feed, / and the layout's stylesheet from a tracker under ``root``."""
    settings = Settings(data_dir=root / "tracker", host="127.0.0.1", port=0)
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "policy.toml").write_text(preset_text("open"), encoding="utf-8")
    async with tracker_stack(settings, load_identity(settings.data_dir), gateway=gateway) as s:
        await ContentRepository(s.db).keep(
            POST, new_deletion_token(), parse_policy(preset_text("open"))
        )
        async with httpx.AsyncClient(base_url=s.url, trust_env=False) as client:
            paths = ["/privacy", "/feed", "/", "/static/lichen.css"]
            return {path: await client.get(path, headers={"accept": "text/html"}) for path in paths}


def _main(page: httpx.Response) -> str:
    """The page's own content: its ``<main>`` element (the layout around it differs)."""
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    found = re.search(r"<main\b.*?</main>", page.text, re.DOTALL)
    assert found is not None, page.text
    return found.group(0)


def _nav(page: httpx.Response) -> list[str]:
    found = re.search(r'<nav aria-label="Main">.*?</nav>', page.text, re.DOTALL)
    assert found is not None, page.text
    return re.findall(r'href="([^"]+)"', found.group(0))


@pytest.fixture
async def both(tmp_path: Path) -> AsyncIterator[tuple[dict[str, httpx.Response], ...]]:
    web_ui = await _pages(tmp_path / "with-gateway", gateway=True)
    bare = await _pages(tmp_path / "bare", gateway=False)
    yield web_ui, bare


async def test_both_paths_render_the_same_privacy_page(
    both: tuple[dict[str, httpx.Response], ...],
) -> None:
    web_ui, bare = both
    page = _main(bare["/privacy"])
    assert page == _main(web_ui["/privacy"])
    assert "Privacy policy: open" in page
    assert '<a href="/privacy.json" id="policy-json-link">/privacy.json</a>' in page


async def test_both_paths_render_the_same_feed_page(
    both: tuple[dict[str, httpx.Response], ...],
) -> None:
    web_ui, bare = both
    page = _main(bare["/feed"])
    assert page == _main(web_ui["/feed"])
    assert f"say {CANARY}" in page and 'id="post-req-policy-pages-1"' in page
    assert "2025-12-01 00:00 UTC" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page  # escaped, not run


async def test_the_bare_tracker_links_only_the_pages_it_serves(
    both: tuple[dict[str, httpx.Response], ...],
) -> None:
    web_ui, bare = both
    assert _nav(bare["/privacy"]) == ["/privacy", "/feed"]
    assert {"/", "/network", "/privacy", "/feed"} <= set(_nav(web_ui["/privacy"]))
    assert 'href="/docs"' not in bare["/privacy"].text  # no API on a bare tracker
    assert bare["/static/lichen.css"].status_code == 200  # the layout's stylesheet is there
    assert web_ui["/static/lichen.css"].status_code == 200
    assert bare["/"].status_code == 404  # no chat page without the web UI
    assert web_ui["/"].status_code == 200
