"""The web UI's routes in-process: real tracker and nodes on loopback, fake engines."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import MODEL, FakeEngine, LocalNetwork
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from lichen.http.csrf import COOKIE, HEADER
from lichen.http.errors import install_error_handlers
from lichen.privacy.document import PolicyDocument, PolicySection, PrivacyClass
from lichen.storage.engine import create_engine, migrate
from lichen.storage.repositories import RequestLogRepository, RequestRecord
from lichen.tracker.registry import Registry
from lichen.web import WebDeps, WebUI, install_web
from lichen.web.telemetry import FileTelemetrySetting


class OpenFeedPolicy:
    """A policy double with classes, a public feed and a document."""

    def summary(self) -> str:
        return "Prompts you mark public appear on the public feed."

    def classes(self) -> list[PrivacyClass]:
        return [
            PrivacyClass("standard", "standard", "any node"),
            PrivacyClass("private", "private", "owner nodes only"),
        ]

    def has_public_feed(self) -> bool:
        return True

    def disclosure(self) -> str | None:
        return "Notice: prompts are logged here."

    def document(self) -> PolicyDocument | None:
        return PolicyDocument(
            title="Privacy policy: open",
            sections=[PolicySection("In short", paragraphs=["Everything <b>public</b>."])],
            source='name = "open"',
        )


class FakePost:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def feed_json(self) -> dict[str, Any]:
        return self.data


class FakeFeed:
    def __init__(self, posts: list[FakePost]) -> None:
        self.posts = posts
        self.limits: list[int] = []

    async def feed(self, limit: int = 50) -> list[FakePost]:
        self.limits.append(limit)
        return self.posts[:limit]


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[RequestLogRepository]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'web.db'}"
    await migrate(url)
    engine = create_engine(url)
    try:
        yield RequestLogRepository(engine)
    finally:
        await engine.dispose()


async def web(
    net: LocalNetwork, tmp_path: Path, repo: RequestLogRepository | None = None, **changes: object
) -> WebUI:
    deps = WebDeps(registry=net.tracker.registry, data_dir=tmp_path / "data", requests=repo)
    for name, value in changes.items():
        setattr(deps, name, value)
    return install_web(net.app, deps)


def record(created_ms: int, node: str | None, status: int = 200) -> RequestRecord:
    return RequestRecord(
        created_ms=created_ms,
        model=MODEL,
        kind="chat",
        status=status,
        prompt_tokens=5,
        completion_tokens=7,
        ttft_ms=10,
        latency_ms=30,
        node_peer_id=node,
        stream=True,
    )


def csrf_token(page: httpx.Response) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert match is not None
    return match.group(1)


async def test_pages_render_with_layout_and_security_headers(
    net: LocalNetwork, tmp_path: Path
) -> None:
    await web(net, tmp_path)
    await net.add_node(FakeEngine(), "alpha")
    for path, marker in (
        ("/", 'id="prompt"'),
        ("/network", 'id="nodes-table"'),
        ("/node", "No node runs alongside this gateway"),
        ("/privacy", "not prompts or answers"),
    ):
        r = await net.client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert marker in r.text, path
        assert '<a href="/network"' in r.text  # the shared navigation
        assert "<script>" not in r.text  # no inline script: the CSP forbids it
        assert 'class="disclosure"' not in r.text  # the neutral policy needs no notice
    chat = (await net.client.get("/")).text
    assert f'<option value="{MODEL}">{MODEL} · 1 node</option>' in chat
    assert '<option value="auto">' in chat
    assert 'id="privacy-class"' not in chat  # the neutral policy offers no choice
    css = await net.client.get("/static/lichen.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert (await net.client.get("/static/chat.js")).status_code == 200


async def test_network_json_lists_nodes_models_and_request_rates(
    net: LocalNetwork, tmp_path: Path, repo: RequestLogRepository
) -> None:
    await web(net, tmp_path, repo)
    alpha = await net.add_node(FakeEngine(), "alpha")
    await net.add_node(FakeEngine(model="other-model"), "beta")
    now = int(time.time() * 1000)
    for age_s in (1, 5, 30, 90, 200):
        await repo.record(record(now - age_s * 1000, alpha.peer_id))

    data = (await net.client.get("/ui/api/network")).json()
    assert [n["name"] for n in data["nodes"]] == ["alpha", "beta"]
    first = data["nodes"][0]
    assert first["peer_id"] == alpha.peer_id
    assert first["model_names"] == [MODEL]
    assert first["state"] == "ready"
    assert 0 <= first["load"] <= 1 and 0 < first["reputation"] <= 1
    assert "cores" in first["hardware_text"] or first["hardware_text"] == "unknown"
    assert data["models"] == [{"name": MODEL, "nodes": 1}, {"name": "other-model", "nodes": 1}]
    rates = data["requests"]
    assert rates["per_minute"] == 3  # 1 s, 5 s and 30 s ago
    assert len(rates["history"]) == 30 and sum(rates["history"]) == 5

    page = (await net.client.get("/network")).text
    assert "alpha" in page and "beta" in page and "other-model" in page


async def test_network_page_updates_when_a_node_leaves(net: LocalNetwork, tmp_path: Path) -> None:
    await web(net, tmp_path)
    alpha = await net.add_node(FakeEngine(), "alpha")
    await net.add_node(FakeEngine(), "beta")
    assert len((await net.client.get("/ui/api/network")).json()["nodes"]) == 2
    await net.kill(alpha)
    data = (await net.client.get("/ui/api/network")).json()
    assert [n["name"] for n in data["nodes"]] == ["beta"]
    assert data["models"] == [{"name": MODEL, "nodes": 1}]


async def test_node_page_counts_only_this_nodes_requests(
    net: LocalNetwork, tmp_path: Path, repo: RequestLogRepository
) -> None:
    alpha = await net.add_node(FakeEngine(), "alpha")
    await web(net, tmp_path, repo, local_peer_id=alpha.peer_id)
    now = int(time.time() * 1000)
    await repo.record(record(now, alpha.peer_id))
    await repo.record(record(now, alpha.peer_id))
    await repo.record(record(now, alpha.peer_id, status=502))  # failed: not served
    await repo.record(record(now, "lp-someone-else"))

    info = (await net.client.get("/ui/api/node")).json()
    assert (info["name"], info["served"], info["tokens"]) == ("alpha", 2, 24)
    assert info["engines"] == ["fake"] and info["models"][0]["name"] == MODEL
    assert info["telemetry"] is False and info["credits"] is None
    page = (await net.client.get("/node")).text
    assert "Node: alpha" in page and "fake-model" in page
    assert 'id="telemetry" name="telemetry" role="switch" aria-describedby' in page  # unchecked


async def test_telemetry_toggle_needs_csrf_and_persists(net: LocalNetwork, tmp_path: Path) -> None:
    alpha = await net.add_node(FakeEngine(), "alpha")
    await web(net, tmp_path, local_peer_id=alpha.peer_id)
    page = await net.client.get("/node")
    token = csrf_token(page)
    assert net.client.cookies.get(COOKIE) == token

    refused = await net.client.post("/node/telemetry", data={"telemetry": "on"})
    assert refused.status_code == 403
    wrong = await net.client.post(
        "/node/telemetry", data={"telemetry": "on", "csrf_token": "x" * 40}
    )
    assert wrong.status_code == 403
    assert FileTelemetrySetting(tmp_path / "data").enabled() is False

    form = await net.client.post("/node/telemetry", data={"telemetry": "on", "csrf_token": token})
    assert form.status_code == 303 and form.headers["location"].startswith("/node?saved=1")
    assert FileTelemetrySetting(tmp_path / "data").enabled() is True
    assert "checked" in (await net.client.get("/node")).text.split('id="telemetry"')[1][:80]

    off = await net.client.post(
        "/node/telemetry",
        json={"telemetry": False},
        headers={HEADER: token, "accept": "application/json"},
    )
    assert off.json() == {"telemetry": False}
    assert FileTelemetrySetting(tmp_path / "data").enabled() is False


async def test_telemetry_cannot_be_changed_from_another_machine(tmp_path: Path) -> None:
    app = FastAPI()
    install_error_handlers(app)
    install_web(app, WebDeps(registry=Registry(), data_dir=tmp_path))
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        token = csrf_token(await client.get("/node"))
        r = await client.post("/node/telemetry", data={"telemetry": "on", "csrf_token": token})
    assert r.status_code == 403
    assert FileTelemetrySetting(tmp_path).enabled() is False


async def test_policy_with_classes_and_feed_shows_selector_document_and_feed(
    net: LocalNetwork, tmp_path: Path
) -> None:
    feed = FakeFeed(
        [
            FakePost(
                {
                    "id": "req-1",
                    "created_ms": 1_700_000_000_000,
                    "model": MODEL,
                    "prompt": [{"role": "user", "content": "<script>alert(1)</script>"}],
                    "completion": "Moss grows slowly.",
                }
            )
        ]
    )
    await web(net, tmp_path, policy=OpenFeedPolicy(), feed=feed)
    chat = (await net.client.get("/")).text
    assert 'id="privacy-class"' in chat and '<option value="private"' in chat
    assert '<option value="" ' in chat  # "network default" comes first
    assert 'id="publish"' in chat and 'id="publish" name="lichen_public" checked' not in chat
    assert "Prompts you mark public appear on the public feed." in chat
    assert '<p class="disclosure" role="note"><strong>Notice: prompts are logged here.' in chat
    assert '<a href="/feed"' in chat
    privacy = (await net.client.get("/privacy")).text
    assert "Privacy policy: open" in privacy
    assert "Everything &lt;b&gt;public&lt;/b&gt;." in privacy  # escaped, never raw HTML
    assert "name = &#34;open&#34;" in privacy  # the policy file itself
    page = await net.client.get("/feed")
    assert page.status_code == 200
    assert "Moss grows slowly." in page.text and "2023-11-14 22:13 UTC" in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>alert" not in page.text
    assert feed.limits == [100]


async def test_no_feed_page_without_a_public_feed(net: LocalNetwork, tmp_path: Path) -> None:
    await web(net, tmp_path)
    assert (await net.client.get("/feed")).status_code == 404
    assert 'href="/feed"' not in (await net.client.get("/")).text
    assert 'id="publish"' not in (await net.client.get("/")).text


async def test_routes_another_feature_serves_are_left_alone(tmp_path: Path) -> None:
    app = FastAPI()

    @app.get("/privacy")
    async def theirs() -> PlainTextResponse:
        return PlainTextResponse("their privacy page")

    install_web(app, WebDeps(registry=Registry(), data_dir=tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        assert (await client.get("/privacy")).text == "their privacy page"
        assert (await client.get("/network")).status_code == 200


async def test_request_log_per_minute_and_node_stats(repo: RequestLogRepository) -> None:
    minute = 29_000_000
    base = minute * 60_000
    for offset_s, node in ((0, "a"), (10, "a"), (59, "b"), (60, "a"), (185, None)):
        await repo.record(record(base + offset_s * 1000, node))
    assert await repo.per_minute(base) == {minute: 3, minute + 1: 1, minute + 3: 1}
    assert await repo.per_minute(base + 61_000) == {minute + 3: 1}
    stats = await repo.node_stats("a")
    assert (stats["requests"], stats["tokens"]) == (3, 36)
    assert (await repo.node_stats("nobody"))["requests"] == 0
