"""Ports for the servers tests start, without the bind-close-reuse race.

Asking the OS for a port (bind port 0, read it, close) and starting a server on it
later leaves a gap in which something else can take the port, and two calls can even
hand out the same one. So:

- :func:`free_port` never hands out a port twice in one test session;
- :func:`start_on_free_port` starts a server on a fresh port and, when the port was
  taken in the gap (``EADDRINUSE``, or Lichen's "already in use" refusal), starts it
  again on another one.

In-process servers avoid the gap entirely: ``lichen.server`` binds port 0 itself and
reports the port it got.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

ATTEMPTS = 5
_given: set[tuple[str, int]] = set()
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now, never handed out before in this session."""
    with _lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if (host, port) not in _given:
                _given.add((host, port))
                return port
    raise RuntimeError("the OS keeps handing out ports this session already used")


def port_taken(exc: BaseException) -> bool:
    """Whether ``exc`` says the port was taken: EADDRINUSE, or Lichen's refusal text."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return True
    return "already in use" in str(exc)


def start_on_free_port(
    start: Callable[[int], T], *, host: str = "127.0.0.1", attempts: int = ATTEMPTS
) -> T:
    """``start(port)`` on a fresh port; on another one if that port was taken meanwhile.

    ``start`` must clean up after itself when it fails (stop what it started).
    """
    for attempt in range(attempts):
        try:
            return start(free_port(host))
        except (OSError, RuntimeError) as exc:
            if not port_taken(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
