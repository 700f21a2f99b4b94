"""Model uploads: accounts with the uploader role add GGUF files to the network's catalog.

An upload is declared first (name, size, SHA-256 of the file and of each 1 MiB
chunk), then its chunks are PUT in any order, each checked against its declared
hash before it is stored; ``GET`` says which are still missing, so an upload
interrupted anywhere resumes where it stopped. ``complete`` checks the whole
file (GGUF magic, size, SHA-256) and adds it to the signed catalog, owned by the
uploader. Each account may hold at most ``model_upload_quota_bytes`` in models
and uploads. Deleting a model (its owner) removes it from the catalog and
garbage-collects its chunks.

Routes (all need an account that is listed in ``model_uploaders``)::

    POST   /v1/catalog/uploads                      declare (or resume) an upload
    GET    /v1/catalog/uploads/{id}                 what is missing
    PUT    /v1/catalog/uploads/{id}/chunks/{index}  one chunk (raw bytes)
    POST   /v1/catalog/uploads/{id}/complete        verify and publish
    DELETE /v1/catalog/uploads/{id}                 abandon
    DELETE /v1/catalog/models/{name}                delete an uploaded model
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from lichen.accounts.principal import SCOPE_ACCOUNT
from lichen.accounts.service import AccountService
from lichen.errors import ErrorCode, LichenError
from lichen.http.auth import Authenticator
from lichen.models.catalog_sign import CatalogModel, check_model, safe_filename
from lichen.models.chunks import CHUNK_SIZE, MAX_CHUNKS, ChunkList, chunk_sha, is_sha256
from lichen.models.network_catalog import UPLOAD_SOURCE, Upload
from lichen.models.verify import GGUF_MAGIC
from lichen.tracker.model_routes import ModelService

log = logging.getLogger(__name__)

UPLOADS_PATH = "/v1/catalog/uploads"
UploadId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
Index = Annotated[int, Path(ge=0, lt=MAX_CHUNKS)]
ModelName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
Sha = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="Catalog name.")
    filename: str = Field(min_length=1, max_length=255, description="GGUF file name.")
    size: int = Field(gt=len(GGUF_MAGIC), description="File size in bytes.")
    sha256: Sha
    chunk_size: int = Field(default=CHUNK_SIZE, description=f"Must be {CHUNK_SIZE}.")
    chunks: list[Sha] = Field(max_length=MAX_CHUNKS, description="SHA-256 of each chunk.")
    license: str = Field(default="", max_length=64)


Who = Callable[[Request], Awaitable[str]]


def _missing(service: ModelService, upload: Upload) -> list[int]:
    return [i for i, sha in enumerate(upload.chunks) if not service.chunks.has(sha)]


def _body(service: ModelService, upload: Upload) -> dict[str, Any]:
    missing = _missing(service, upload)
    return {
        "object": "model.upload",
        "id": upload.id,
        "name": upload.name,
        "size": upload.size,
        "sha256": upload.sha256,
        "chunk_size": upload.chunk_size,
        "chunks": len(upload.chunks),
        "missing": missing,
    }


def mount_uploads(app: FastAPI, service: ModelService, who: Who, *, quota_bytes: int) -> None:
    """Add the upload routes; ``who`` answers the uploading account's id or raises."""
    catalog = service.catalog

    async def uploader(request: Request) -> str:
        return await who(request)

    # A default, not an Annotated alias: annotations are strings here and this one is local.
    signed_in = Depends(uploader)

    async def owned(upload_id: str, account: str) -> Upload:
        upload = await catalog.upload(upload_id)
        if upload is None or upload.account_id != account:
            raise LichenError(ErrorCode.NOT_FOUND, "no such upload", param="id")
        return upload

    async def create(body: UploadRequest, account: str = signed_in) -> JSONResponse:
        if not safe_filename(body.filename) or not body.filename.lower().endswith(".gguf"):
            raise LichenError(ErrorCode.INVALID_REQUEST, "bad file name", param="filename")
        if body.chunk_size != CHUNK_SIZE:
            raise LichenError(
                ErrorCode.INVALID_REQUEST, "unsupported chunk size", param="chunk_size"
            )
        if len(body.chunks) != -(-body.size // CHUNK_SIZE):
            raise LichenError(
                ErrorCode.INVALID_REQUEST, "chunk count and size disagree", param="chunks"
            )
        for upload in await catalog.uploads(account):
            if upload.sha256 == body.sha256 and upload.name == body.name:
                return JSONResponse(_body(service, upload))  # resume
        if await catalog.get(body.name) is not None:
            raise LichenError(ErrorCode.CONFLICT, f"{body.name!r} is taken", param="name")
        used = await catalog.bytes_owned(account)
        if used + body.size > quota_bytes:
            raise LichenError(
                ErrorCode.REQUEST_TOO_LARGE,
                f"this upload needs {body.size} bytes; your quota leaves "
                f"{max(0, quota_bytes - used)}",
                param="size",
            )
        upload = await catalog.create_upload(
            account_id=account,
            name=body.name,
            filename=body.filename,
            size=body.size,
            sha256=body.sha256,
            chunk_size=CHUNK_SIZE,
            chunks=list(body.chunks),
            license=body.license,
        )
        log.info("upload %s of model %s (%d bytes) started", upload.id, upload.name, upload.size)
        return JSONResponse(_body(service, upload), status_code=201)

    async def status(upload_id: UploadId, account: str = signed_in) -> JSONResponse:
        return JSONResponse(_body(service, await owned(upload_id, account)))

    async def put_chunk(
        upload_id: UploadId, index: Index, request: Request, account: str = signed_in
    ) -> Response:
        upload = await owned(upload_id, account)
        if index >= len(upload.chunks):
            raise LichenError(ErrorCode.INVALID_REQUEST, "no such chunk", param="index")
        _offset, length = upload.chunk_list().span(index)
        data = bytearray()
        async for part in request.stream():
            data += part
            if len(data) > length:
                raise LichenError(ErrorCode.REQUEST_TOO_LARGE, f"chunk {index} is {length} bytes")
        if len(data) != length or chunk_sha(bytes(data)) != upload.chunks[index]:
            raise LichenError(
                ErrorCode.HASH_MISMATCH, f"chunk {index} does not match its declared SHA-256"
            )
        if index == 0 and not data.startswith(GGUF_MAGIC):
            raise LichenError(ErrorCode.MODEL_SOURCE_INVALID, "not a GGUF file", param="index")
        await asyncio.to_thread(service.chunks.put, bytes(data), upload.chunks[index])
        return Response(status_code=204)

    async def complete(upload_id: UploadId, account: str = signed_in) -> JSONResponse:
        upload = await owned(upload_id, account)
        missing = _missing(service, upload)
        if missing:
            raise LichenError(
                ErrorCode.INVALID_REQUEST, f"{len(missing)} chunks are missing", param="chunks"
            )
        if not await asyncio.to_thread(_whole_matches, service, upload.chunk_list()):
            await catalog.delete_upload(upload.id)
            await service.gc()
            raise LichenError(ErrorCode.HASH_MISMATCH, "the file does not match its SHA-256")
        model = check_model(
            CatalogModel(
                name=upload.name,
                sha256=upload.sha256,
                size=upload.size,
                filename=upload.filename,
                source="upload",
                license=upload.license,
                capabilities=["chat"],
                chunk_size=CHUNK_SIZE,
                chunks=upload.chunks,
                cached=True,
                owner=account,
            )
        )
        await catalog.add(model, UPLOAD_SOURCE)
        await catalog.delete_upload(upload.id)
        log.info("model %s uploaded (%d bytes)", model.name, model.size)
        return JSONResponse({"object": "model", "name": model.name, "sha256": model.sha256})

    async def abandon(upload_id: UploadId, account: str = signed_in) -> Response:
        upload = await owned(upload_id, account)
        await catalog.delete_upload(upload.id)
        await service.gc()
        return Response(status_code=204)

    async def delete_model(name: ModelName, account: str = signed_in) -> JSONResponse:
        found = await catalog.get(name)
        if found is None or found[0].owner != account:
            raise LichenError(ErrorCode.NOT_FOUND, f"you have no model named {name!r}")
        await service.delete(name)
        return JSONResponse({"object": "model", "name": name, "deleted": True})

    app.add_api_route(UPLOADS_PATH, create, methods=["POST"])
    app.add_api_route(UPLOADS_PATH + "/{upload_id}", status, methods=["GET"])
    app.add_api_route(UPLOADS_PATH + "/{upload_id}/chunks/{index}", put_chunk, methods=["PUT"])
    app.add_api_route(UPLOADS_PATH + "/{upload_id}/complete", complete, methods=["POST"])
    app.add_api_route(UPLOADS_PATH + "/{upload_id}", abandon, methods=["DELETE"])
    app.add_api_route("/v1/catalog/models/{name}", delete_model, methods=["DELETE"])


def _whole_matches(service: ModelService, chunks: ChunkList) -> bool:
    digest = hashlib.sha256()
    for sha in chunks.chunks:
        data = service.chunks.get(sha)
        if data is None or not is_sha256(sha):
            return False
        digest.update(data)
    return digest.hexdigest() == chunks.sha256


def uploader_auth(
    authenticator: Authenticator, accounts: AccountService, allowed: frozenset[str]
) -> Who:
    """``who`` for :func:`mount_uploads`: a signed-in account the operator lets upload."""

    async def who(request: Request) -> str:
        principal = await authenticator.principal(request)
        if principal.account_id is None:
            raise LichenError(
                ErrorCode.UNAUTHORIZED, "uploading models needs an API key or a session"
            )
        if not principal.allows(SCOPE_ACCOUNT):
            raise LichenError(ErrorCode.FORBIDDEN, "this API key lacks the 'account' scope")
        account = await accounts.get(principal.account_id)
        if account is None or not account.active:
            raise LichenError(ErrorCode.UNAUTHORIZED, "unknown account")
        if account.username not in allowed and account.id not in allowed:
            raise LichenError(
                ErrorCode.FORBIDDEN,
                "this account may not upload models (the operator lists uploaders in "
                "LICHEN_MODEL_UPLOADERS)",
            )
        return str(account.id)

    return who
