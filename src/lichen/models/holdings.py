"""What a node can serve to its peers: the chunks of the models it holds, verified.

Complete models are the store's models with a chunk list (``chunks.json`` next to
the GGUF: written when the model came through the network, computed once for a
model pulled another way); partial ones are downloads in progress. Chunks are
read from the files at their offsets and re-hashed before they are sent, so a
node never serves bytes that changed on its disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import msgspec

from lichen.models.chunks import CHUNK_SIZE, ChunkList, chunk_sha, iter_chunks, read_chunk
from lichen.models.store import InstalledModel, ModelStore
from lichen.wire.messages import HeldModel, SwarmHave

log = logging.getLogger(__name__)

CHUNKS_FILE = "chunks.json"


def new_bitmap(count: int, full: bool = False) -> bytearray:
    bitmap = bytearray(b"\xff" if full else b"\x00") * ((count + 7) // 8)
    if full and count % 8:
        bitmap[-1] = (1 << (count % 8)) - 1
    return bitmap


def set_bit(bitmap: bytearray, index: int) -> None:
    bitmap[index >> 3] |= 1 << (index & 7)


def get_bit(bitmap: bytes | bytearray, index: int) -> bool:
    return index >> 3 < len(bitmap) and bool(bitmap[index >> 3] >> (index & 7) & 1)


def read_chunk_list(model_dir: Path) -> ChunkList | None:
    try:
        return msgspec.json.decode((model_dir / CHUNKS_FILE).read_bytes(), type=ChunkList)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def write_chunk_list(model_dir: Path, chunks: ChunkList) -> None:
    tmp = model_dir / f".{CHUNKS_FILE}.part"
    tmp.write_bytes(msgspec.json.encode(chunks))
    tmp.replace(model_dir / CHUNKS_FILE)


def compute_chunk_list(model: InstalledModel) -> ChunkList:
    """Chunk hashes of an installed (already verified) model file."""
    return ChunkList(
        name=model.name,
        sha256=model.sha256,
        size=model.size,
        chunk_size=CHUNK_SIZE,
        chunks=[chunk_sha(block) for block in iter_chunks(model.path)],
        complete=True,
    )


@dataclass
class _Held:
    path: Path
    chunks: ChunkList
    have: bytearray


class Holdings:
    """Files this node can serve chunks from, by the model's whole-file SHA-256."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._held: dict[str, _Held] = {}

    def scan(self) -> int:
        """(Re)load the store's models; computes missing chunk lists. Runs in a thread."""
        for model in self.store.list():
            if model.sha256 in self._held:
                continue
            chunks = read_chunk_list(model.path.parent) if not model.linked else None
            if chunks is None or chunks.sha256 != model.sha256:
                try:
                    chunks = compute_chunk_list(model)
                except OSError as exc:
                    log.warning("cannot share %s: %s", model.name, exc)
                    continue
                if not model.linked:
                    write_chunk_list(model.path.parent, chunks)
            self.add_complete(model.path, chunks)
        return len(self._held)

    def add_complete(self, path: Path, chunks: ChunkList) -> None:
        self._held[chunks.sha256] = _Held(path, chunks, new_bitmap(len(chunks.chunks), True))

    def add_partial(self, path: Path, chunks: ChunkList, have: bytearray) -> None:
        self._held[chunks.sha256] = _Held(path, chunks, have)

    def update_partial(self, chunks: ChunkList) -> None:
        held = self._held.get(chunks.sha256)
        if held is not None:
            held.chunks = chunks

    def drop(self, sha256: str) -> None:
        self._held.pop(sha256, None)

    def message(self) -> SwarmHave:
        return SwarmHave(
            models=[HeldModel(sha256=s, have=bytes(h.have)) for s, h in self._held.items()]
        )

    def read(self, model: str, index: int, sha256: str) -> bytes | None:
        """The chunk's bytes if this node holds it and they still hash right."""
        held = self._held.get(model)
        if held is None or not get_bit(held.have, index) or index >= len(held.chunks.chunks):
            return None
        if held.chunks.chunks[index] != sha256:
            return None
        offset, length = held.chunks.span(index)
        try:
            data = read_chunk(held.path, offset, length)
        except OSError:
            return None
        return data if chunk_sha(data) == sha256 else None
