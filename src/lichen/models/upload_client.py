"""Uploading a GGUF to a tracker's catalog (``lichen models upload``), resumably.

The file is hashed (whole and per 1 MiB chunk) and declared; the tracker
answers which chunks it still needs (all of them the first time, the rest after
an interruption), and only those are sent.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx

from lichen.errors import ErrorCode, LichenError, parse_code
from lichen.models.chunks import CHUNK_SIZE, chunk_sha, iter_chunks, read_chunk
from lichen.models.progress import NullProgress, Progress
from lichen.models.verify import check_gguf_magic

UPLOADS_PATH = "/v1/catalog/uploads"


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            message, code = str(error["message"]), str(error.get("code") or "")
        except (ValueError, KeyError, TypeError):
            message, code = response.text[:200], ""
        error_code = parse_code(code, unknown=ErrorCode.INTERNAL)
        raise LichenError(error_code, f"upload refused (HTTP {response.status_code}): {message}")
    body: dict[str, Any] = response.json() if response.content else {}
    return body


def upload_file(
    base_url: str,
    api_key: str,
    path: Path,
    *,
    name: str,
    license: str = "",
    progress: Progress | None = None,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Upload ``path`` as catalog model ``name``; returns the tracker's answer."""
    progress = progress or NullProgress()
    check_gguf_magic(path)
    whole = hashlib.sha256()
    hashes = []
    size = 0
    for block in iter_chunks(path, CHUNK_SIZE):
        whole.update(block)
        hashes.append(chunk_sha(block))
        size += len(block)
    declared = {
        "name": name,
        "filename": path.name,
        "size": size,
        "sha256": whole.hexdigest(),
        "chunk_size": CHUNK_SIZE,
        "chunks": hashes,
        "license": license,
    }
    http = client or httpx.Client(base_url=base_url.rstrip("/"), timeout=120.0, trust_env=False)
    headers = {"authorization": f"Bearer {api_key}"}
    try:
        upload = _check(http.post(UPLOADS_PATH, json=declared, headers=headers))
        missing: list[int] = list(upload["missing"])
        progress.start(size, f"Uploading {path.name}")
        progress.advance(size - sum(read_span(size, i)[1] for i in missing))
        for index in missing:
            offset, length = read_span(size, index)
            data = read_chunk(path, offset, length)
            url = f"{UPLOADS_PATH}/{upload['id']}/chunks/{index}"
            _check(http.put(url, content=data, headers=headers))
            progress.advance(length)
        progress.finish()
        return _check(http.post(f"{UPLOADS_PATH}/{upload['id']}/complete", headers=headers))
    finally:
        if client is None:
            http.close()


def read_span(size: int, index: int) -> tuple[int, int]:
    offset = index * CHUNK_SIZE
    return offset, min(CHUNK_SIZE, size - offset)


def delete_model(base_url: str, api_key: str, name: str) -> dict[str, Any]:
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=60.0, trust_env=False) as http:
        return _check(
            http.delete(
                f"/v1/catalog/models/{name}", headers={"authorization": f"Bearer {api_key}"}
            )
        )
