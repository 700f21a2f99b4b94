"""Read a model's tokenizer (vocabulary, merges, pre-tokenizer) from its GGUF header.

Only the key-value header is read, never the tensors, so loading the vocabulary of
a model file costs a few tenths of a second and no weights in memory. The format
(GGUF v2/v3, little-endian): ``b"GGUF"``, version u32, tensor count u64, key-value
count u64, then each pair as a string key, a u32 type and the value; arrays are an
item type u32, a count u64 and the items. Strings are a u64 length and UTF-8 bytes.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["GGUFVocab", "read_vocab"]

MAGIC = b"GGUF"
MAX_KV = 1 << 16  # key-value pairs in one header (real files have ~40)
MAX_ARRAY = 1 << 22  # items in one array (vocabularies have up to ~260k)
MAX_STRING = 1 << 20  # bytes in one string (chat templates are a few KB)

_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_WANTED = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
)


@dataclass(frozen=True, slots=True)
class GGUFVocab:
    model: str  # tokenizer family: "gpt2" (byte-level BPE), "llama" (SentencePiece), ...
    pre: str  # llama.cpp's pre-tokenizer name, e.g. "smollm", "llama-bpe", "qwen2"
    tokens: list[str]
    token_types: list[int]  # 1 normal, 3 control, 4 user-defined, 6 byte
    merges: list[str]  # "a b" pairs, highest priority first


class _Reader:
    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError("truncated GGUF header")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        length = self.take("<Q")
        if length > MAX_STRING or self.pos + length > len(self.data):
            raise ValueError("GGUF string out of range")
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int, keep: bool) -> Any:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.take("<I"), self.take("<Q")
            if count > MAX_ARRAY:
                raise ValueError("GGUF array out of range")
            if not keep and item_kind in _SCALARS:  # skip without decoding
                self.pos += count * struct.calcsize(_SCALARS[item_kind])
                return None
            items = [self.value(item_kind, keep) for _ in range(count)]
            return items if keep else None
        fmt = _SCALARS.get(kind)
        if fmt is None:
            raise ValueError(f"unknown GGUF value type {kind}")
        return self.take(fmt)


def read_vocab(path: Path) -> GGUFVocab:
    """The tokenizer in ``path``'s header; ValueError if it is not a usable GGUF file."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        reader = _Reader(data)
        if data[:4] != MAGIC:
            raise ValueError("not a GGUF file")
        reader.pos = 4
        version = reader.take("<I")
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version}")
        reader.take("<Q")  # tensor count
        kv_count = reader.take("<Q")
        if kv_count > MAX_KV:
            raise ValueError("GGUF header has too many keys")
        found: dict[str, Any] = {}
        for _ in range(kv_count):
            key = reader.string()
            found[key] = reader.value(reader.take("<I"), key in _WANTED)
            if all(k in found for k in _WANTED):
                break
    tokens = found.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list):
        raise ValueError("GGUF file has no vocabulary")
    return GGUFVocab(
        model=str(found.get("tokenizer.ggml.model", "")),
        pre=str(found.get("tokenizer.ggml.pre", "default")),
        tokens=[str(t) for t in tokens],
        token_types=[int(t) for t in found.get("tokenizer.ggml.token_type") or []],
        merges=[str(m) for m in found.get("tokenizer.ggml.merges") or []],
    )
