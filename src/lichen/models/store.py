"""The local model store: ``<data_dir>/models/<name>/<filename>`` plus ``model.json``.

A model is either *owned* (its file lives in its directory, put there by pull)
or *linked* (the sidecar points at a GGUF elsewhere; removing the model leaves
that file alone). Linked entries cache their hash keyed by (path, size, mtime),
so resolving a local path a second time does not rehash it.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from lichen.clock import now_ms
from lichen.errors import ErrorCode, LichenError
from lichen.models.catalog import BUILTIN_CATALOG, Catalog
from lichen.models.progress import Progress
from lichen.models.spec import NameSpec, PathSpec, UrlSpec, parse_spec
from lichen.models.verify import hash_file

logger = logging.getLogger(__name__)

SIDECAR = "model.json"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_NOT_NAME_CHARS = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True)
class InstalledModel:
    """A model ready to load."""

    name: str
    path: Path  # the GGUF file
    sha256: str
    size: int
    source: str  # where it came from (catalog source, URL, or file URI)
    linked: bool = False  # True: the file lives outside the store
    added_ms: int = 0


class _Sidecar(msgspec.Struct, kw_only=True):
    name: str
    filename: str
    sha256: str
    size: int
    source: str  # human-readable origin
    added_ms: int  # when registered (unix ms)
    path: str | None = None  # linked models only: absolute path of the file
    mtime_ns: int | None = None  # linked models only: mtime the cached hash belongs to


_decoder = msgspec.json.Decoder(_Sidecar)


def validate_name(name: str) -> str:
    """The lowercased name, if it is a valid store name (a safe directory name)."""
    folded = name.strip().lower()
    if not _NAME.fullmatch(folded):
        raise LichenError(
            ErrorCode.INVALID_REQUEST,
            f"invalid model name {name!r}: use 1-64 of a-z 0-9 . _ - (not starting with . _ -)",
            param="name",
        )
    return folded


def derive_name(text: str) -> str:
    """A valid store name made from a file stem or URL segment."""
    folded = _NOT_NAME_CHARS.sub("-", text.lower()).lstrip("._-")[:64].rstrip("._-")
    return folded or "model"


class ModelStore:
    """Installed models under ``root`` (normally ``data_dir / "models"``)."""

    def __init__(self, root: Path, *, catalog: Catalog = BUILTIN_CATALOG) -> None:
        self.root = root
        self.catalog = catalog

    @classmethod
    def for_data_dir(cls, data_dir: Path, *, catalog: Catalog = BUILTIN_CATALOG) -> ModelStore:
        """The default layout, ``data_dir / "models"`` (``Settings.models_path`` may differ)."""
        return cls(data_dir / "models", catalog=catalog)

    # -- queries -------------------------------------------------------------

    def list(self) -> builtins.list[InstalledModel]:
        """Installed models, sorted by name; broken entries are skipped (and logged)."""
        if not self.root.is_dir():
            return []
        found = []
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or not child.is_dir():
                continue
            model = self._read(child.name)
            if model is not None:
                found.append(model)
        return found

    def get(self, name: str) -> InstalledModel | None:
        """The installed model called ``name`` (a catalog alias works too), or None."""
        for candidate in self._candidates(name):
            model = self._read(candidate)
            if model is not None:
                return model
        return None

    def resolve(
        self, spec: str, *, name: str | None = None, progress: Progress | None = None
    ) -> InstalledModel:
        """The model to load for ``spec``: an installed or catalog name, a GGUF path or a URL.

        A local path outside the store is registered by reference (hashed once,
        then cached by path, size and mtime). Anything not installed raises
        MODEL_NOT_FOUND saying which ``lichen models pull`` would fix it.
        """
        parsed = parse_spec(spec)
        if isinstance(parsed, PathSpec):
            return self.link(parsed.path, name=name, progress=progress)
        if isinstance(parsed, UrlSpec):
            for model in self.list():
                if model.source == parsed.display and parsed.sha256 in (None, model.sha256):
                    return model
            raise LichenError(
                ErrorCode.MODEL_NOT_FOUND,
                f"no model from {parsed.display} is installed; run `lichen models pull {spec}`",
            )
        installed = self.get(parsed.name)
        if installed is not None:
            return self._refresh(installed, progress) if installed.linked else installed
        if Path(parsed.name).is_file():
            return self.link(Path(parsed.name), name=name, progress=progress)
        raise self._not_found(parsed)

    # -- changes -------------------------------------------------------------

    def model_dir(self, name: str) -> Path:
        return self.root / validate_name(name)

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """Create the model directory; if the block fails, remove it again if empty."""
        directory = self.model_dir(name)
        self._ensure_root()
        directory.mkdir(exist_ok=True)
        try:
            yield directory
        except BaseException:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only succeeds if nothing (e.g. a sidecar) is in it
            raise

    def register(
        self, name: str, path: Path, *, sha256: str, size: int, source: str
    ) -> InstalledModel:
        """Record a verified file as model ``name`` (owned if it is in the model's directory).

        Replaces an earlier entry of the same name; a previously owned file with
        a different file name is deleted.
        """
        directory = self.model_dir(name)
        path = path.absolute()
        owned = path.parent == directory.absolute()
        previous = self._read_sidecar(directory.name)
        sidecar = _Sidecar(
            name=directory.name,
            filename=path.name,
            sha256=sha256,
            size=size,
            source=source,
            added_ms=now_ms(),
            path=None if owned else str(path),
            mtime_ns=None if owned else path.stat().st_mtime_ns,
        )
        self._ensure_root()
        directory.mkdir(exist_ok=True)
        _write_atomic(directory / SIDECAR, msgspec.json.format(msgspec.json.encode(sidecar)))
        if (
            previous is not None
            and previous.path is None
            and (not owned or previous.filename != path.name)
        ):
            (directory / previous.filename).unlink(missing_ok=True)
        model = self._read(directory.name)
        assert model is not None
        return model

    def link(
        self,
        path: Path,
        *,
        name: str | None = None,
        sha256: str | None = None,
        progress: Progress | None = None,
    ) -> InstalledModel:
        """Register a local GGUF by reference (or return the store model it already is)."""
        path = path.expanduser().resolve()
        if not path.is_file():
            raise LichenError(ErrorCode.MODEL_NOT_FOUND, f"no such model file: {path}")
        for model in self.list():
            if model.path.resolve() != path:
                continue
            if not model.linked:
                return model  # a file inside the store
            if name is None or validate_name(name) == model.name:
                refreshed = self._refresh(model, progress)
                if sha256 is not None and refreshed.sha256 != sha256:
                    raise _mismatch(path, sha256, refreshed.sha256)
                return refreshed
        digest = hash_file(path, sha256=sha256, progress=progress)
        target = self._free_name(name, path, digest.sha256)
        return self.register(
            target, path, sha256=digest.sha256, size=digest.size, source=path.as_uri()
        )

    def remove(self, name: str) -> bool:
        """Delete model ``name`` (a linked model's own file is left alone)."""
        for candidate in self._candidates(name):
            directory = self.root / candidate
            if directory.is_dir():
                shutil.rmtree(directory)  # never follows links out of the directory
                logger.info("removed model %s", candidate)
                return True
        return False

    # -- internals -----------------------------------------------------------

    def _ensure_root(self) -> None:
        """Create the store (and a missing data dir) private to the user."""
        if not self.root.is_dir():
            self.root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.root.mkdir(mode=0o700, exist_ok=True)

    def _candidates(self, name: str) -> builtins.list[str]:
        """Directory names ``name`` may refer to: itself, then its catalog entry's name."""
        folded = name.strip().lower()
        names = [folded] if _NAME.fullmatch(folded) else []
        entry = self.catalog.lookup(folded)
        if entry is not None and entry.name not in names:
            names.append(entry.name)
        return names

    def _read_sidecar(self, name: str) -> _Sidecar | None:
        try:
            return _decoder.decode((self.root / name / SIDECAR).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            logger.warning("ignoring model %s: unreadable %s (%s)", name, SIDECAR, exc)
            return None

    def _read(self, name: str) -> InstalledModel | None:
        sidecar = self._read_sidecar(name)
        if sidecar is None:
            return None
        path = Path(sidecar.path) if sidecar.path else self.root / name / sidecar.filename
        if not path.is_file():
            logger.warning("ignoring model %s: its file %s is missing", name, path)
            return None
        return InstalledModel(
            name=name,
            path=path,
            sha256=sidecar.sha256,
            size=sidecar.size,
            source=sidecar.source,
            linked=sidecar.path is not None,
            added_ms=sidecar.added_ms,
        )

    def _refresh(self, model: InstalledModel, progress: Progress | None) -> InstalledModel:
        """Rehash a linked model whose file changed since its hash was cached."""
        sidecar = self._read_sidecar(model.name)
        stat = model.path.stat()
        if sidecar is not None and (stat.st_size, stat.st_mtime_ns) == (
            sidecar.size,
            sidecar.mtime_ns,
        ):
            return model
        logger.info("model file %s changed; rehashing", model.path)
        digest = hash_file(model.path, progress=progress)
        return self.register(
            model.name, model.path, sha256=digest.sha256, size=digest.size, source=model.source
        )

    def _free_name(self, name: str | None, path: Path, sha256: str) -> str:
        """``name`` (or one derived from the file stem) unless another model holds it."""
        if name is not None:
            wanted = validate_name(name)
            if self._read_sidecar(wanted) is not None:
                raise LichenError(
                    ErrorCode.INVALID_REQUEST,
                    f"another model is already installed as {wanted!r}; "
                    f"remove it with `lichen models rm {wanted}` or choose another name",
                    param="name",
                )
            return wanted
        base = derive_name(path.stem)
        for candidate in (base, f"{base[:55]}-{sha256[:8]}"):
            if self._read_sidecar(candidate) is None:
                return candidate
        raise LichenError(
            ErrorCode.INVALID_REQUEST,
            f"the names {base!r} and {base}-{sha256[:8]!s} are taken; pass a name",
            param="name",
        )

    def _not_found(self, parsed: NameSpec) -> LichenError:
        entry = self.catalog.lookup(parsed.name)
        if entry is not None:
            return LichenError(
                ErrorCode.MODEL_NOT_FOUND,
                f"model {entry.name!r} is not installed; run `lichen models pull {entry.name}`",
            )
        installed = ", ".join(m.name for m in self.list()) or "none"
        return LichenError(
            ErrorCode.MODEL_NOT_FOUND,
            f"unknown model {parsed.name!r} (installed: {installed}; catalog: "
            f"{', '.join(self.catalog.names())}); run `lichen models pull NAME`, "
            "or pass a URL or a path to a .gguf file",
        )


def _mismatch(path: Path, expected: str, actual: str) -> LichenError:
    return LichenError(
        ErrorCode.HASH_MISMATCH, f"SHA-256 mismatch for {path}: expected {expected}, got {actual}"
    )


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
