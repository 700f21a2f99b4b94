"""Keep llama.cpp's own stderr from reaching the node's logs.

llama.cpp (and the grammar compiler inside it) prints to file descriptor 2 with
``fprintf``, whatever ``verbosity`` says: for example "JSON schema conversion
was incomplete: pattern <the request's pattern> ...", which is request content
a ``private`` network must not keep. Python cannot filter those writes, so
:func:`silence_engine_stderr` moves the process's real stderr to a new
descriptor, points Python's ``sys.stderr`` and logging handlers at it, and
turns fd 2 into a pipe whose bytes are counted and dropped by a daemon thread.

Only the node processes (``lichen up``, ``lichen node``) call it, once, before
loading a model; in-process tests keep their own stderr.
"""

from __future__ import annotations

import faulthandler
import io
import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

_lock = threading.Lock()
_installed = False


def silence_engine_stderr() -> bool:
    """Route C-level writes to fd 2 into a drain; Python keeps the real stderr.

    Returns whether the guard is (now) installed; a no-op off POSIX.
    """
    global _installed
    with _lock:
        if _installed or os.name != "posix":
            return _installed
        sys.stderr.flush()
        real_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        old = sys.stderr
        real = io.TextIOWrapper(
            os.fdopen(real_fd, "wb", buffering=0),
            encoding=getattr(old, "encoding", None) or "utf-8",
            errors="backslashreplace",
            line_buffering=True,
            write_through=True,
        )
        sys.stderr = real
        _repoint_handlers(old, real)
        if faulthandler.is_enabled():
            faulthandler.enable(file=real)  # crash dumps still reach the operator
        thread = threading.Thread(
            target=_drain, args=(read_fd,), name="engine-stderr-drain", daemon=True
        )
        thread.start()
        _installed = True
        log.debug("llama.cpp's stderr is dropped (it may echo request content)")
        return True


def _repoint_handlers(old: object, new: io.TextIOWrapper) -> None:
    loggers: list[logging.Logger] = [logging.getLogger()]
    for candidate in logging.Logger.manager.loggerDict.values():
        if isinstance(candidate, logging.Logger):
            loggers.append(candidate)
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and _is_stderr(handler.stream, old):
                handler.setStream(new)


def _is_stderr(stream: object, old: object) -> bool:
    if stream is old or stream is sys.__stderr__:
        return True
    try:
        return int(stream.fileno()) == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


def _drain(read_fd: int) -> None:
    """Read and discard what the engine writes; note only how much, never what."""
    dropped = 0
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        if dropped == 0:
            log.debug("dropped engine stderr output (%d bytes so far)", len(chunk))
        dropped += len(chunk)
