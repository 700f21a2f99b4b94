"""Uploads: an account with the uploader role adds a GGUF; nodes fetch it; deleting it cleans up.

A real tracker stack in process, real accounts and API keys, the real upload
client (``lichen models upload`` calls it) in a thread; then the hostile cases:
no credentials, the wrong account, bad names, wrong chunks, the quota.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from models_net import Net, network, sha, write_gguf

from lichen.errors import ErrorCode, LichenError
from lichen.models.chunks import CHUNK_SIZE, chunk_sha
from lichen.models.upload_client import upload_file
from lichen.privacy.audit import audit
from lichen.privacy.policy import DataClass, load_policy

QUOTA = 8 * CHUNK_SIZE


@dataclass
class Uploaders:
    net: Net
    alice: str  # API key of an account with the uploader role
    bob: str  # API key of an account without it
    http: httpx.AsyncClient


async def _key(net: Net, username: str) -> str:
    accounting = net.stack.accounting
    assert accounting is not None
    account = await accounting.accounts.signup(username, f"{username}@example.org", "pw-123456789")
    new = await accounting.keys.create(account.id, name="k", scopes=["inference", "account"])
    return new.secret


@pytest.fixture
async def up(tmp_path: Path) -> AsyncIterator[Uploaders]:
    async with (
        network(tmp_path, model_uploaders="alice", model_upload_quota_bytes=QUOTA) as net,
        httpx.AsyncClient(base_url=net.stack.url) as http,
    ):
        yield Uploaders(net, await _key(net, "alice"), await _key(net, "bob"), http)


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _declare(data: bytes, name: str = "mine", **extra: object) -> dict[str, object]:
    chunks = [chunk_sha(data[i : i + CHUNK_SIZE]) for i in range(0, len(data), CHUNK_SIZE)]
    body: dict[str, object] = {
        "name": name,
        "filename": f"{name}.gguf",
        "size": len(data),
        "sha256": sha(data),
        "chunks": chunks,
    }
    return body | extra


async def test_upload_catalog_download_delete_audit(up: Uploaders, tmp_path: Path) -> None:
    net = up.net
    data = write_gguf(tmp_path / "mine.gguf", size=3 * CHUNK_SIZE + 5)
    answer = await asyncio.to_thread(
        upload_file, net.stack.url, up.alice, tmp_path / "mine.gguf", name="mine", license="MIT"
    )
    assert answer["sha256"] == sha(data)
    doc = await net.node("reader").catalog()
    assert doc is not None
    entry = doc.lookup("mine")
    assert entry is not None and entry.cached and entry.source == "upload"
    model = await net.node("n1").install("mine")
    assert model.path.read_bytes() == data
    policy = load_policy(net.stack.settings.data_dir)
    report = await audit(net.stack.db, policy, models_dir=net.stack.settings.models_path)
    files = next(c for c in report.classes if c.data_class == DataClass.MODEL_FILE.value)
    assert files.rows == 1 and "network_model" in files.tables and report.ok
    # Only its owner may delete it; then it is gone from the catalog, chunks and audit.
    denied = await up.http.delete("/v1/catalog/models/mine", headers=_auth(up.bob))
    assert denied.status_code == 403
    gone = await up.http.delete("/v1/catalog/models/mine", headers=_auth(up.alice))
    assert gone.status_code == 200, gone.text
    assert net.models.chunks.all() == set()
    doc = await net.node("reader2").catalog()
    assert doc is not None and doc.lookup("mine") is None
    report = await audit(net.stack.db, policy, models_dir=net.stack.settings.models_path)
    files = next(c for c in report.classes if c.data_class == DataClass.MODEL_FILE.value)
    assert files.rows == 0 and report.ok


async def test_an_interrupted_upload_resumes(up: Uploaders, tmp_path: Path) -> None:
    data = write_gguf(tmp_path / "r.gguf", size=4 * CHUNK_SIZE)
    created = await up.http.post(
        "/v1/catalog/uploads", json=_declare(data, "r"), headers=_auth(up.alice)
    )
    assert created.status_code == 201, created.text
    upload = created.json()
    assert upload["missing"] == [0, 1, 2, 3]
    sent = await up.http.put(
        f"/v1/catalog/uploads/{upload['id']}/chunks/1",
        content=data[CHUNK_SIZE : 2 * CHUNK_SIZE],
        headers=_auth(up.alice),
    )
    assert sent.status_code == 204
    status = await up.http.get(f"/v1/catalog/uploads/{upload['id']}", headers=_auth(up.alice))
    assert status.json()["missing"] == [0, 2, 3]
    incomplete = await up.http.post(
        f"/v1/catalog/uploads/{upload['id']}/complete", headers=_auth(up.alice)
    )
    assert incomplete.status_code == 400
    # The client declares the same file again: the tracker answers the same upload.
    answer = await asyncio.to_thread(
        upload_file, up.net.stack.url, up.alice, tmp_path / "r.gguf", name="r"
    )
    assert answer["name"] == "r"
    found = await up.net.models.catalog.get("r")
    assert found is not None and found[0].owner and found[0].cached
    assert await up.net.models.catalog.uploads() == []


async def test_uploads_refuse_hostile_requests(up: Uploaders, tmp_path: Path) -> None:
    data = write_gguf(tmp_path / "h.gguf", size=2 * CHUNK_SIZE + 1)
    good = _declare(data, "h")
    post = "/v1/catalog/uploads"
    assert (await up.http.post(post, json=good)).status_code == 401
    assert (await up.http.post(post, json=good, headers=_auth("lk-bogus"))).status_code == 401
    assert (await up.http.post(post, json=good, headers=_auth(up.bob))).status_code == 403
    alice = _auth(up.alice)
    for bad in (
        good | {"filename": "../../evil.gguf"},
        good | {"filename": ".hidden.gguf"},
        good | {"filename": "model.json"},
        good | {"name": "../x"},
        good | {"name": "UPPER"},
        good | {"sha256": "xyz"},
        good | {"chunks": ["0" * 64]},  # count does not match the size
        good | {"chunk_size": 4096},
        good | {"size": -1},
        good | {"extra": 1},
    ):
        response = await up.http.post(post, json=bad, headers=alice)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["code"]
    big = _declare(write_gguf(tmp_path / "big.gguf", size=QUOTA + 1), "big")
    too_big = await up.http.post(post, json=big, headers=alice)
    assert too_big.status_code == 413
    created = (await up.http.post(post, json=good, headers=alice)).json()
    chunk = f"{post}/{created['id']}/chunks"
    wrong = await up.http.put(
        f"{chunk}/0", content=b"GGUF" + b"x" * (CHUNK_SIZE - 4), headers=alice
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == ErrorCode.HASH_MISMATCH
    over = await up.http.put(f"{chunk}/2", content=b"x" * (CHUNK_SIZE + 10), headers=alice)
    assert over.status_code == 413
    assert (await up.http.put(f"{chunk}/3", content=b"x", headers=alice)).status_code == 400
    assert (await up.http.put(f"{chunk}/-1", content=b"x", headers=alice)).status_code in (
        400,
        404,
        422,
    )
    # Somebody else's upload, or an id that is not one, is simply not there.
    assert (await up.http.get(f"{post}/{created['id']}", headers=_auth(up.bob))).status_code == 403
    assert (await up.http.get(f"{post}/{'0' * 32}", headers=alice)).status_code == 404
    assert (await up.http.get(f"{post}/..%2F..%2Fetc", headers=alice)).status_code in (400, 404)
    assert (
        await up.http.delete("/v1/catalog/models/smollm2-135m", headers=alice)
    ).status_code == 404
    abandoned = await up.http.delete(f"{post}/{created['id']}", headers=alice)
    assert abandoned.status_code == 204
    assert up.net.models.chunks.all() == set()


async def test_upload_client_reports_refusals(up: Uploaders, tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"GGUF" + b"\x00" * 100)
    with pytest.raises(LichenError) as info:
        await asyncio.to_thread(
            upload_file, up.net.stack.url, up.bob, tmp_path / "x.gguf", name="x"
        )
    assert info.value.code is ErrorCode.FORBIDDEN
    (tmp_path / "y.gguf").write_bytes(b"NOPE" + b"\x00" * 100)
    with pytest.raises(LichenError) as info:
        await asyncio.to_thread(
            upload_file, up.net.stack.url, up.alice, tmp_path / "y.gguf", name="y"
        )
    assert info.value.code is ErrorCode.MODEL_SOURCE_INVALID
