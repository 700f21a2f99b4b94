"""Downloading a catalog model through the network: parallel, verified, resumable.

Chunks land in ``<models>/.partial/<sha256>.part`` at their offsets, each one
checked against the signed chunk list before it is written. After an
interruption (even ``kill -9``) the next run re-hashes what is on disk and keeps
every chunk that still matches, so verified chunks are never fetched twice. A
chunk that fails verification is reported and fetched again (the tracker then
asks another holder). When every chunk is there, the whole file is checked
against the catalog's SHA-256 and only then moved into the store: a node never
loads a file the catalog does not vouch for.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from lichen.errors import ErrorCode, LichenError
from lichen.models.catalog_sign import CatalogModel
from lichen.models.chunks import ChunkList, chunk_sha, read_chunk
from lichen.models.holdings import get_bit, new_bitmap, set_bit, write_chunk_list
from lichen.models.progress import NullProgress, Progress
from lichen.models.store import InstalledModel, ModelStore
from lichen.models.swarm_client import SwarmClient
from lichen.models.verify import hash_file

log = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"
PARALLEL = 8  # chunk requests in flight at once
ATTEMPTS = 6  # tries per chunk (each may reach another holder)
ANNOUNCE_EVERY = 8  # chunks between SwarmHave updates


def partial_path(store: ModelStore, sha256: str) -> Path:
    return store.root / PARTIAL_DIR / f"{sha256}.part"


def _resume(path: Path, chunks: ChunkList, have: bytearray) -> int:
    """Mark the chunks already on disk that hash right; returns their bytes."""
    if not path.is_file():
        return 0
    size = path.stat().st_size
    kept = 0
    for index, sha in enumerate(chunks.chunks):
        if get_bit(have, index):
            continue
        offset, length = chunks.span(index)
        if offset >= size:
            break
        data = read_chunk(path, offset, length)
        if chunk_sha(data) == sha:
            set_bit(have, index)
            kept += len(data)
    return kept


class Download:
    """One model's download over an open :class:`SwarmClient`."""

    def __init__(
        self,
        client: SwarmClient,
        entry: CatalogModel,
        store: ModelStore,
        *,
        progress: Progress | None = None,
        parallel: int = PARALLEL,
        source: str = "network",
    ) -> None:
        self.client = client
        self.entry = entry
        self.store = store
        self.progress = progress or NullProgress()
        self.parallel = parallel
        self.source = source
        self.path = partial_path(store, entry.sha256)
        self.resumed_bytes = 0
        self.fetched_bytes = 0
        self.bad_chunks = 0
        self._since_announce = 0

    async def run(self) -> InstalledModel:
        entry = self.entry
        chunks = await self.client.chunk_list(entry.name)
        self._check(chunks)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.touch()
        have = new_bitmap(max(chunks.count(), len(chunks.chunks)))
        self.resumed_bytes = await asyncio.to_thread(_resume, self.path, chunks, have)
        if self.resumed_bytes:
            log.info("resuming %s: %d bytes already verified", entry.name, self.resumed_bytes)
        self.client.holdings.add_partial(self.path, chunks, have)
        self.progress.start(entry.size or chunks.size or None, f"Fetching {entry.name}")
        self.progress.advance(self.resumed_bytes)
        fd = os.open(self.path, os.O_RDWR)
        try:
            while True:
                missing = [i for i in range(len(chunks.chunks)) if not get_bit(have, i)]
                await self._fetch_all(fd, chunks, missing, have)
                if chunks.complete:
                    break
                chunks = await self.client.chunk_list(entry.name, known=len(chunks.chunks))
                self._check(chunks)
                have.extend(bytes(max(0, (len(chunks.chunks) + 7) // 8 - len(have))))
                self.client.holdings.update_partial(chunks)
            os.fsync(fd)
        finally:
            os.close(fd)
            self.progress.finish()
        return await self._install(chunks)

    def _check(self, chunks: ChunkList) -> None:
        if chunks.sha256 != self.entry.sha256:
            raise LichenError(
                ErrorCode.HASH_MISMATCH,
                f"the tracker's chunk list for {self.entry.name} names another file",
            )

    async def _fetch_all(
        self, fd: int, chunks: ChunkList, missing: list[int], have: bytearray
    ) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in missing:
            queue.put_nowait(index)

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                await self._fetch_one(fd, chunks, index, have)

        workers = [asyncio.create_task(worker()) for _ in range(max(1, self.parallel))]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
        await self.client.announce()

    async def _fetch_one(self, fd: int, chunks: ChunkList, index: int, have: bytearray) -> None:
        sha = chunks.chunks[index]
        offset, length = chunks.span(index)
        last: LichenError | None = None
        for attempt in range(ATTEMPTS):
            try:
                data, holder = await self.client.chunk(
                    chunks.sha256, index, sha, direct=attempt == 0, limit=length
                )
            except LichenError as error:
                if error.code in (ErrorCode.NODE_FAILED, ErrorCode.HASH_MISMATCH):
                    raise
                last = error
                await asyncio.sleep(min(0.2 * 2**attempt, 3.0))
                continue
            if chunk_sha(data) != sha or (chunks.size and len(data) != length):
                self.bad_chunks += 1
                log.warning(
                    "chunk %d of %s from %s failed verification",
                    index,
                    chunks.name,
                    holder or "the tracker",
                )
                await self.client.report_bad(chunks.sha256, index, holder)
                continue
            await asyncio.to_thread(os.pwrite, fd, data, offset)
            set_bit(have, index)
            self.fetched_bytes += len(data)
            self.progress.advance(len(data))
            self._since_announce += 1
            if self._since_announce >= ANNOUNCE_EVERY:
                self._since_announce = 0
                await self.client.announce()
            return
        raise LichenError(
            ErrorCode.NODE_FAILED,
            f"could not get chunk {index} of {chunks.name} after {ATTEMPTS} tries"
            + (f": {last.message}" if last is not None else ""),
        )

    async def _install(self, chunks: ChunkList) -> InstalledModel:
        entry = self.entry
        await asyncio.to_thread(os.truncate, self.path, chunks.size)
        digest = await asyncio.to_thread(hash_file, self.path, sha256=entry.sha256)
        if entry.size and digest.size != entry.size:
            raise LichenError(ErrorCode.HASH_MISMATCH, f"{entry.name} has the wrong size")
        with self.store.staging(entry.name) as directory:
            dest = directory / entry.filename
            os.replace(self.path, dest)
            write_chunk_list(directory, chunks)
            model = self.store.register(
                entry.name, dest, sha256=digest.sha256, size=digest.size, source=self.source
            )
        self.client.holdings.add_complete(model.path, chunks)
        await self.client.announce()
        log.info(
            "fetched %s through the network (%d bytes fetched, %d resumed, %d bad chunks refused)",
            entry.name,
            self.fetched_bytes,
            self.resumed_bytes,
            self.bad_chunks,
        )
        return model
