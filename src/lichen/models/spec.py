"""Parsing what a user typed as a model: a name, a URL or a local path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit

from lichen.errors import ErrorCode, LichenError
from lichen.models.verify import normalize_sha256

URL_SCHEMES = frozenset({"http", "https", "file"})


@dataclass(frozen=True)
class UrlSpec:
    """An ``http(s)://`` or ``file://`` URL, with an optional ``#sha256=HEX``."""

    url: str  # without the fragment
    sha256: str | None  # from the fragment, normalized
    filename: str  # last path segment, unquoted ("" if none)

    @property
    def display(self) -> str:
        """The URL without credentials or query string, safe to show and store."""
        parts = urlsplit(self.url)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class PathSpec:
    """A path to a local file (not checked to exist)."""

    path: Path


@dataclass(frozen=True)
class NameSpec:
    """A catalog or installed model name (or, failing that, a bare file name)."""

    name: str


ParsedSpec = UrlSpec | PathSpec | NameSpec


def parse_spec(spec: str) -> ParsedSpec:
    """Classify ``spec``; names never contain a path separator or end in ``.gguf``."""
    text = spec.strip()
    if not text:
        raise LichenError(ErrorCode.MODEL_SOURCE_INVALID, "empty model name, URL or path")
    parts = urlsplit(text)
    if parts.scheme.lower() in URL_SCHEMES:
        return _parse_url(text)
    if "/" in text or os.sep in text or text.startswith("~") or text.lower().endswith(".gguf"):
        return PathSpec(Path(text).expanduser())
    return NameSpec(text)


def _parse_url(text: str) -> UrlSpec:
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme != "file" and not parts.netloc:
        raise LichenError(ErrorCode.MODEL_SOURCE_INVALID, f"URL has no host: {text}")
    sha256: str | None = None
    if parts.fragment:
        key, _, value = parts.fragment.partition("=")
        if key.lower() != "sha256" or not value:
            raise LichenError(
                ErrorCode.MODEL_SOURCE_INVALID,
                f"unsupported URL fragment #{parts.fragment}: only #sha256=HEX is understood",
            )
        sha256 = normalize_sha256(value)
    url = urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    filename = unquote(PurePosixPath(parts.path).name)
    return UrlSpec(url=url, sha256=sha256, filename=filename)
