"""Operator surfaces: /metrics, /v1/network, /ui/api/node behind the operator token (issue 10).

The tracker is the real ``tracker_stack`` on loopback; ``auto`` gates public
networks only, ``open`` and ``operator`` force either way.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from lichen.config import Settings
from lichen.http.operator import TOKEN_FILE, operator_headers, operator_token, surfaces_mode
from lichen.identity.store import load_identity
from lichen.roles.tracker import tracker_stack

SURFACES = ["/metrics", "/v1/network", "/ui/api/node", "/docs", "/openapi.json"]
# What a request that passed the gate gets: this tracker runs no node of its own.
_PASSED = {p: 200 for p in SURFACES} | {"/ui/api/node": 404}


def _settings(root: Path, **extra: object) -> Settings:
    return Settings(data_dir=root / "tracker", host="127.0.0.1", port=0, **extra)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _client(
    root: Path, gateway: bool = True, **extra: object
) -> AsyncIterator[httpx.AsyncClient]:
    settings = _settings(root, **extra)
    identity = load_identity(settings.data_dir)
    async with (
        tracker_stack(settings, identity, gateway=gateway) as s,
        httpx.AsyncClient(base_url=s.url, trust_env=False) as client,
    ):
        yield client


@pytest.fixture
async def public(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(tmp_path, network_mode="public") as client:
        yield client


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


async def test_public_network_gates_operator_surfaces(
    public: httpx.AsyncClient, tmp_path: Path
) -> None:
    token = operator_token(tmp_path / "tracker")
    for path in SURFACES:
        _error(await public.get(path), 401, "invalid_api_key")
        wrong = {"authorization": "Bearer lop_not-the-token"}
        _error(await public.get(path, headers=wrong), 403, "forbidden")
        ok = await public.get(path, headers={"authorization": f"Bearer {token}"})
        assert ok.status_code == _PASSED[path], (path, ok.text)
    assert (await public.get("/health")).status_code in (200, 503)  # never gated
    assert (await public.get("/v1/models")).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "bearer " + "x" * 10_000,
        "Bearer lop_" + "\u00e9",
        "Token lop_abc",
    ],
)
async def test_hostile_credentials_get_typed_refusals(
    public: httpx.AsyncClient, header: str
) -> None:
    response = await public.get("/v1/network", headers={b"authorization": header.encode("latin-1")})
    assert response.status_code in (401, 403), response.text
    assert response.json()["error"]["type"]


async def test_the_token_file_is_private_and_stable(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    first = operator_token(data_dir)
    assert first.startswith("lop_") and len(first) > 40
    assert operator_token(data_dir) == first
    assert stat.S_IMODE(os.stat(data_dir / TOKEN_FILE).st_mode) == 0o600
    assert operator_headers(data_dir) == {"authorization": f"Bearer {first}"}
    assert operator_headers(tmp_path / "none") == {}


async def test_private_network_keeps_surfaces_open(tmp_path: Path) -> None:
    async with _client(tmp_path, network_mode="private") as client:
        for path in SURFACES:
            assert (await client.get(path)).status_code == _PASSED[path], path
    assert not (tmp_path / "tracker" / TOKEN_FILE).exists()


async def test_forced_operator_mode_on_a_private_network(tmp_path: Path) -> None:
    async with _client(tmp_path, network_mode="private", operator_surfaces="operator") as client:
        _error(await client.get("/v1/network"), 401, "invalid_api_key")


async def test_forced_open_mode_on_a_public_network(tmp_path: Path) -> None:
    async with _client(tmp_path, network_mode="public", operator_surfaces="open") as client:
        assert (await client.get("/v1/network")).status_code == 200


async def test_bare_tracker_gates_metrics_with_a_typed_error(tmp_path: Path) -> None:
    async with _client(tmp_path, gateway=False, network_mode="public") as client:
        _error(await client.get("/metrics"), 401, "invalid_api_key")
        _error(await client.get("/v1/network"), 401, "invalid_api_key")
        token = operator_token(tmp_path / "tracker")
        headers = {"authorization": f"Bearer {token}"}
        assert (await client.get("/metrics", headers=headers)).status_code == 200


def test_auto_mode_follows_the_network_mode(tmp_path: Path) -> None:
    assert surfaces_mode(Settings(network_mode="public")) == "operator"
    assert surfaces_mode(Settings(network_mode="private")) == "open"
    assert surfaces_mode(Settings(network_mode="public", operator_surfaces="open")) == "open"


def test_cli_prints_the_token_it_creates(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lichen.cli.main import app

    data_dir = tmp_path / "op"
    result = CliRunner().invoke(app, ["operator", "token", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token == operator_token(data_dir)
    assert stat.S_IMODE(os.stat(data_dir / TOKEN_FILE).st_mode) == 0o600


def test_cli_refuses_a_corrupt_token_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lichen.cli.main import app

    data_dir = tmp_path / "op"
    data_dir.mkdir()
    (data_dir / TOKEN_FILE).write_text("garbage")
    result = CliRunner().invoke(app, ["operator", "token", "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert "not an operator token" in result.output
