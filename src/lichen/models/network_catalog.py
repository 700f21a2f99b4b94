"""The tracker's model catalog, persisted: rows of ``network_model`` and ``model_upload``.

The operator adds models (``lichen models add``), uploads add more, the
pull-through cache records the chunks once it holds a file, and deleting a
model removes its row (its chunks are then garbage-collected by the caller).
"""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.clock import now_ms
from lichen.errors import ErrorCode, LichenError
from lichen.models.catalog_sign import CatalogModel
from lichen.models.chunks import ChunkList
from lichen.storage.models_tables import ModelUploadRow, NetworkModelRow

UPLOAD_SOURCE = '{"kind": "upload"}'


def _split(chunks: str) -> list[str]:
    return [chunks[i : i + 64] for i in range(0, len(chunks), 64)]


def _model(row: NetworkModelRow) -> CatalogModel:
    return CatalogModel(
        name=row.name,
        sha256=row.sha256,
        size=row.size,
        filename=row.filename,
        source=row.source,
        license=row.license,
        description=row.description,
        context=row.context,
        capabilities=[c for c in row.capabilities.split(",") if c],
        chunk_size=row.chunk_size,
        chunks=_split(row.chunks),
        cached=row.cached,
        owner=row.owner,
    )


@dataclass(frozen=True)
class Upload:
    id: str
    account_id: str
    name: str
    filename: str
    size: int
    sha256: str
    chunk_size: int
    chunks: list[str]
    license: str
    created_ms: int

    def chunk_list(self) -> ChunkList:
        return ChunkList(
            name=self.name,
            sha256=self.sha256,
            size=self.size,
            chunk_size=self.chunk_size,
            chunks=self.chunks,
            complete=True,
        )


def _upload(row: ModelUploadRow) -> Upload:
    return Upload(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        filename=row.filename,
        size=row.size,
        sha256=row.sha256,
        chunk_size=row.chunk_size,
        chunks=_split(row.chunks),
        license=row.license,
        created_ms=row.created_ms,
    )


class NetworkCatalog:
    """Catalog rows in the tracker's database."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db

    async def list(self) -> builtins.list[CatalogModel]:
        async with self.db.connect() as conn:
            rows = (
                await conn.execute(select(NetworkModelRow).order_by(NetworkModelRow.name))
            ).all()
        return [_model(NetworkModelRow(**row._mapping)) for row in rows]

    async def get(self, name: str) -> tuple[CatalogModel, str] | None:
        """The model and its stored source JSON, or None."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(select(NetworkModelRow).where(NetworkModelRow.name == name))
            ).first()
        if row is None:
            return None
        model_row = NetworkModelRow(**row._mapping)
        return _model(model_row), model_row.source_spec

    async def add(self, model: CatalogModel, source_spec: str) -> None:
        """Add a model; CONFLICT if the name is taken."""
        values = {
            "name": model.name,
            "sha256": model.sha256,
            "size": model.size,
            "filename": model.filename,
            "source": model.source,
            "source_spec": source_spec,
            "license": model.license,
            "description": model.description,
            "context": model.context,
            "capabilities": ",".join(model.capabilities),
            "chunk_size": model.chunk_size,
            "chunks": "".join(model.chunks),
            "cached": model.cached,
            "owner": model.owner,
            "created_ms": now_ms(),
        }
        async with self.db.begin() as conn:
            exists = await conn.scalar(
                select(func.count())
                .select_from(NetworkModelRow)
                .where(NetworkModelRow.name == model.name)
            )
            if exists:
                raise LichenError(
                    ErrorCode.CONFLICT,
                    f"the catalog already has a model named {model.name!r}",
                    param="name",
                )
            await conn.execute(insert(NetworkModelRow).values(**values))

    async def set_cached(self, name: str, chunks: ChunkList) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                update(NetworkModelRow)
                .where(NetworkModelRow.name == name, NetworkModelRow.sha256 == chunks.sha256)
                .values(
                    size=chunks.size,
                    chunk_size=chunks.chunk_size,
                    chunks="".join(chunks.chunks),
                    cached=True,
                )
            )

    async def delete(self, name: str) -> bool:
        async with self.db.begin() as conn:
            result = await conn.execute(delete(NetworkModelRow).where(NetworkModelRow.name == name))
        return bool(result.rowcount)

    async def referenced_chunks(self) -> set[str]:
        """Every chunk a catalog model or an upload in progress names (what GC keeps)."""
        async with self.db.connect() as conn:
            models = (await conn.execute(select(NetworkModelRow.chunks))).scalars().all()
            uploads = (await conn.execute(select(ModelUploadRow.chunks))).scalars().all()
        return {sha for text in (*models, *uploads) for sha in _split(text)}

    # -- uploads -----------------------------------------------------------------------

    async def create_upload(
        self,
        *,
        account_id: str,
        name: str,
        filename: str,
        size: int,
        sha256: str,
        chunk_size: int,
        chunks: builtins.list[str],
        license: str,
    ) -> Upload:
        row_id = uuid.uuid4().hex
        async with self.db.begin() as conn:
            await conn.execute(
                insert(ModelUploadRow).values(
                    id=row_id,
                    account_id=account_id,
                    name=name,
                    filename=filename,
                    size=size,
                    sha256=sha256,
                    chunk_size=chunk_size,
                    chunks="".join(chunks),
                    license=license,
                    created_ms=now_ms(),
                )
            )
        upload = await self.upload(row_id)
        assert upload is not None
        return upload

    async def upload(self, upload_id: str) -> Upload | None:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(select(ModelUploadRow).where(ModelUploadRow.id == upload_id))
            ).first()
        return None if row is None else _upload(ModelUploadRow(**row._mapping))

    async def uploads(self, account_id: str | None = None) -> builtins.list[Upload]:
        query = select(ModelUploadRow)
        if account_id is not None:
            query = query.where(ModelUploadRow.account_id == account_id)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_upload(ModelUploadRow(**row._mapping)) for row in rows]

    async def delete_upload(self, upload_id: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(delete(ModelUploadRow).where(ModelUploadRow.id == upload_id))

    async def bytes_owned(self, account_id: str) -> int:
        """Bytes of catalog models and uploads in progress that ``account_id`` owns (quota)."""
        async with self.db.connect() as conn:
            models = await conn.scalar(
                select(func.coalesce(func.sum(NetworkModelRow.size), 0)).where(
                    NetworkModelRow.owner == account_id
                )
            )
            uploads = await conn.scalar(
                select(func.coalesce(func.sum(ModelUploadRow.size), 0)).where(
                    ModelUploadRow.account_id == account_id
                )
            )
        return int(models or 0) + int(uploads or 0)
