"""A node's models from its network: the signed catalog, downloads, and seeding.

``NetworkModels.install(spec)`` is what ``lichen node`` calls for each
``--model``: a name in the network's signed catalog is checked (an installed
file must hash to the catalog's SHA-256, else it is fetched again) or fetched
through the network; anything else (a path, a URL, a name the catalog lacks)
goes the old way (:func:`lichen.roles.llama_engine.install_model`). ``seed()`` keeps a
transfer link open while the node runs, so its chunks serve other nodes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.exceptions import InvalidHandshake, InvalidURI

from lichen.errors import ErrorCode, LichenError
from lichen.identity.store import Identity
from lichen.models.catalog import BUILTIN_CATALOG
from lichen.models.catalog_sign import CatalogDocument, CatalogModel, verify_catalog
from lichen.models.chunk_server import ChunkServer
from lichen.models.download import Download
from lichen.models.holdings import Holdings
from lichen.models.progress import Progress
from lichen.models.spec import NameSpec, parse_spec
from lichen.models.store import InstalledModel, ModelStore
from lichen.models.swarm import LINK_PATH
from lichen.models.swarm_client import SwarmClient
from lichen.models.verify import hash_file
from lichen.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CATALOG_PATH = "/v1/catalog"
MAX_CATALOG_RESPONSE = 20 * 1024 * 1024
CONNECT_ATTEMPTS = 3
PENDING_RETRY_S = 3.0


def tracker_base(url: str) -> tuple[str, str]:
    """(http base, ws base) of the tracker a node link URL (ws://host:port/...) names."""
    parts = urlsplit(url)
    secure = parts.scheme in ("wss", "https")
    http = urlunsplit(("https" if secure else "http", parts.netloc, "", "", ""))
    ws = urlunsplit(("wss" if secure else "ws", parts.netloc, "", "", ""))
    return http, ws


async def fetch_catalog(
    http_base: str, network_key: bytes, tls: ssl.SSLContext | None = None
) -> CatalogDocument | None:
    """The verified catalog; None when the tracker has none (404) or cannot be reached."""
    verify: ssl.SSLContext | bool = tls if tls is not None else True
    try:
        async with httpx.AsyncClient(timeout=30.0, trust_env=False, verify=verify) as client:
            response = await client.get(http_base + CATALOG_PATH)
    except httpx.HTTPError as exc:
        log.warning("could not read the network's model catalog: %s", exc)
        return None
    if response.status_code == 404:
        return None
    if response.status_code != 200 or len(response.content) > MAX_CATALOG_RESPONSE:
        raise LichenError(
            ErrorCode.PROTOCOL_ERROR, f"the model catalog answered HTTP {response.status_code}"
        )
    try:
        body = response.json()
    except ValueError:
        raise LichenError(ErrorCode.PROTOCOL_ERROR, "the model catalog is not JSON") from None
    return verify_catalog(body, network_key)


class NetworkModels:
    """Install models from the network a node joined; keep serving their chunks."""

    def __init__(
        self,
        store: ModelStore,
        identity: Identity,
        *,
        tracker_url: str,
        network_key: bytes,
        invite: str = "",
        fallback: Callable[[ModelStore, str, Progress | None], InstalledModel] | None = None,
        tls: ssl.SSLContext | None = None,
        chunk_port: int | None = None,
        chunk_host: str = "127.0.0.1",
    ) -> None:
        self.tls = tls
        self.chunk_port = chunk_port  # serve chunks to peers directly (None: relay only)
        self.chunk_host = chunk_host
        self._server: ChunkServer | None = None
        self.port = 0  # the direct chunk port once serving
        self.store = store
        self.identity = identity
        self.http_base, ws_base = tracker_base(tracker_url)
        self.link_url = ws_base + LINK_PATH
        self.network_key = network_key
        self.invite = invite
        self.fallback = fallback
        self.holdings = Holdings(store)
        self._catalog: CatalogDocument | None = None

    def client(self) -> SwarmClient:
        client = SwarmClient(
            identity=self.identity,
            link_url=self.link_url,
            network_key=self.network_key,
            holdings=self.holdings,
            invite=self.invite,
            tls=self.tls,
        )
        client.port = self.port
        return client

    async def share(self) -> int:
        """Start the direct chunk endpoint if ``chunk_port`` is set; returns its port."""
        if self.chunk_port is not None and self._server is None:
            self._server = ChunkServer(self.holdings, host=self.chunk_host, port=self.chunk_port)
            self.port = await self._server.start()
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None
            self.port = 0

    async def catalog(self) -> CatalogDocument | None:
        if self._catalog is None:
            self._catalog = await fetch_catalog(self.http_base, self.network_key, self.tls)
        return self._catalog

    async def install_all(
        self, specs: list[str], progress: Progress | None, stop: asyncio.Event
    ) -> list[InstalledModel] | None:
        """Install every spec in order; None if ``stop`` is set first (downloads resume)."""

        async def install_each() -> list[InstalledModel]:
            return [await self.install(spec, progress) for spec in specs]

        job = asyncio.create_task(install_each(), name="install-models")
        stopper = asyncio.create_task(stop.wait(), name="install-stop")
        try:
            await asyncio.wait({job, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if job.done():
            return job.result()
        await cancel_and_wait(job)
        await self.close()
        log.info("stopped while installing models; verified chunks are kept for the next start")
        return None

    async def install(self, spec: str, progress: Progress | None = None) -> InstalledModel:
        parsed = parse_spec(spec)
        entry = None
        if isinstance(parsed, NameSpec):
            doc = await self.catalog()
            builtin = BUILTIN_CATALOG.lookup(parsed.name)
            names = [parsed.name.strip().lower()] + ([builtin.name] if builtin else [])
            entry = next((e for n in names if doc and (e := doc.lookup(n)) is not None), None)
        if entry is None:
            if self.fallback is None:
                raise LichenError(ErrorCode.MODEL_NOT_FOUND, f"{spec!r} is not in the catalog")
            return await asyncio.to_thread(self.fallback, self.store, spec, progress)
        local = self.store.get(entry.name)
        if local is not None and local.sha256 == entry.sha256:
            try:
                await asyncio.to_thread(hash_file, local.path, sha256=entry.sha256)
                return local
            except LichenError as error:
                log.warning("%s on disk does not match the catalog (%s)", entry.name, error.message)
        elif local is not None:
            log.warning("%s on disk is not the catalog's file; fetching it", entry.name)
        return await self.download(entry, progress)

    async def download(
        self, entry: CatalogModel, progress: Progress | None = None
    ) -> InstalledModel:
        """Fetch ``entry`` (reconnecting a few times; verified chunks are kept)."""
        await asyncio.to_thread(self.holdings.scan)
        await self.share()
        error = LichenError(ErrorCode.NODE_FAILED, "tracker unreachable")
        attempt = 0
        pending_said = False
        while attempt < CONNECT_ATTEMPTS:
            try:
                async with self.client() as client:
                    return await Download(
                        client, entry, self.store, progress=progress, source=self._source()
                    ).run()
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                error = LichenError(ErrorCode.NODE_FAILED, f"tracker unreachable: {exc}")
            except LichenError as exc:
                if exc.code is ErrorCode.MEMBERSHIP_PENDING:
                    # Say it once; the operator's approval can take a while.
                    level = logging.DEBUG if pending_said else logging.WARNING
                    log.log(level, "%s (waiting for approval before fetching)", exc.message)
                    pending_said = True
                    await asyncio.sleep(PENDING_RETRY_S)
                    continue
                if exc.code is not ErrorCode.NODE_FAILED:
                    raise
                error = exc
            log.warning("fetching %s: %s; retrying", entry.name, error.message)
            attempt += 1
            await asyncio.sleep(0.5 * attempt)
        raise error

    def _source(self) -> str:
        return f"network:{self.http_base}"

    async def seed(self) -> None:
        """Serve this node's chunks to peers until cancelled (reconnects on loss)."""
        if not await asyncio.to_thread(self.holdings.scan):
            return  # nothing to share (e.g. a node that serves only an upstream)
        try:
            await self.share()
            await self._seed()
        finally:
            await self.close()

    async def _seed(self) -> None:
        delay = 0.5
        while True:
            try:
                async with self.client() as client:
                    delay = 0.5
                    await client.wait_closed()
            except LichenError as error:
                if error.code in (ErrorCode.IDENTITY_REVOKED, ErrorCode.IDENTITY_UNKNOWN):
                    log.warning("stopped sharing model chunks: %s", error.message)
                    return
                log.info("transfer link: %s", error.message)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                log.debug("transfer link unavailable: %s", exc)
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, 30.0)
