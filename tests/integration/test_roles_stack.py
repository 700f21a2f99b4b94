"""The tracker stack composed from the role builders: one owner for background work.

Everything the stack starts lives on one exit stack, so a failure half-way through
start stops what had already started, and a normal exit leaves no task behind.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest

from lichen.config import Settings
from lichen.identity.store import load_identity
from lichen.roles import tracker as tracker_role
from lichen.roles.tracker import RUNTIME_FILE, tracker_stack
from lichen.server import HttpServer
from lichen.tracker.model_routes import ModelService

# Background work the tracker role starts before its HTTP server (by task name).
TRACKER_TASKS = {"revocation-watcher", "last-seen-writer", "tracker-watchdog"}


def _settings(root: Path, **extra: object) -> Settings:
    return Settings(data_dir=root / "tracker", host="127.0.0.1", port=0, **extra)  # type: ignore[arg-type]


def _tasks() -> set[asyncio.Task[object]]:
    return set(asyncio.all_tasks())


async def test_a_failing_http_start_stops_everything_started_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_running: set[str] = set()

    async def failing_start(self: HttpServer) -> int:
        seen_running.update(t.get_name() for t in asyncio.all_tasks())
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(HttpServer, "start", failing_start)
    before = _tasks()
    settings = _settings(tmp_path)
    with pytest.raises(OSError):
        async with tracker_stack(settings, load_identity(settings.data_dir)):
            raise AssertionError("the stack must not start")
    assert seen_running >= TRACKER_TASKS  # they were running when the server failed...
    leaked = {t.get_name() for t in _tasks() - before if not t.done()}
    assert leaked == set()  # ...and nothing is left now
    assert not (settings.data_dir / RUNTIME_FILE).exists()


async def test_a_failure_inside_the_tracker_role_stops_what_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_running: set[str] = set()

    async def failing_models(self: ModelService, *, seed: str | None = None) -> None:
        seen_running.update(t.get_name() for t in asyncio.all_tasks())
        raise RuntimeError("model store unreadable")

    monkeypatch.setattr(ModelService, "start", failing_models)
    before = _tasks()
    settings = _settings(tmp_path)
    with pytest.raises(RuntimeError, match="model store unreadable"):
        async with tracker_stack(settings, load_identity(settings.data_dir)):
            raise AssertionError("the stack must not start")
    assert "tracker-watchdog" in seen_running  # started before the models...
    assert not TRACKER_TASKS & seen_running - {"tracker-watchdog"}  # (these come after)
    assert {t.get_name() for t in _tasks() - before if not t.done()} == set()  # ...stopped


async def test_a_busy_port_leaves_no_background_work(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        settings = _settings(tmp_path).model_copy(update={"port": busy.getsockname()[1]})
        before = _tasks()
        with pytest.raises(OSError):
            async with tracker_stack(settings, load_identity(settings.data_dir)):
                raise AssertionError("the port is taken")
    assert {t.get_name() for t in _tasks() - before if not t.done()} == set()


async def test_stack_stops_in_reverse_order_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    real_background = tracker_role.background

    def recording(exits: object, work: object, name: str) -> asyncio.Task[None]:
        order.append(f"start {name}")
        exits.callback(order.append, f"stop {name}")  # type: ignore[attr-defined]
        return real_background(exits, work, name)  # type: ignore[arg-type]

    monkeypatch.setattr(tracker_role, "background", recording)
    before = _tasks()
    settings = _settings(tmp_path)
    async with tracker_stack(settings, load_identity(settings.data_dir)) as stack:
        assert (settings.data_dir / RUNTIME_FILE).exists()
        assert stack.gateway is not None and stack.scheduler is stack.gateway.scheduler
        async with httpx.AsyncClient(base_url=stack.url, trust_env=False) as client:
            assert (await client.get("/health")).json()["nodes"] == 0
    assert order == [
        "start revocation-watcher",
        "start last-seen-writer",
        "stop last-seen-writer",
        "stop revocation-watcher",
    ]
    assert not (settings.data_dir / RUNTIME_FILE).exists()
    assert {t.get_name() for t in _tasks() - before if not t.done()} == set()


async def test_without_the_gateway_only_the_tracker_and_privacy_pages_serve(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    async with (
        tracker_stack(settings, load_identity(settings.data_dir), gateway=False) as stack,
        httpx.AsyncClient(base_url=stack.url, trust_env=False) as client,
    ):
        assert stack.gateway is None
        assert (await client.get("/health")).json()["status"] == "ok"
        assert (await client.get("/privacy.json")).status_code == 200
        assert (await client.get("/v1/catalog")).status_code == 200
        chat = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
        assert chat.status_code in (404, 405)
        assert (await client.get("/")).status_code == 404  # no web UI
