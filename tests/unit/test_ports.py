"""tests/ports.py: ports are never handed out twice, and a taken port is retried."""

from __future__ import annotations

import errno
import socket

import pytest

from ports import free_port, port_taken, start_on_free_port


def test_free_port_never_repeats_and_is_bindable() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))


def test_a_taken_port_is_retried_on_another() -> None:
    tried: list[int] = []
    holders: list[socket.socket] = []

    def start(port: int) -> int:
        tried.append(port)
        if len(tried) == 1:  # someone took the port in the gap: bind really fails
            holder = socket.socket()
            holder.bind(("127.0.0.1", port))
            holders.append(holder)
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
        return port

    try:
        assert start_on_free_port(start) == tried[-1]
    finally:
        for holder in holders:
            holder.close()
    assert len(tried) == 2 and tried[0] != tried[1]


def test_lichens_refusal_counts_as_taken_and_other_errors_pass_through() -> None:
    assert port_taken(RuntimeError("port 5 on 127.0.0.1 is already in use by another program"))
    assert port_taken(OSError(errno.EADDRINUSE, "Address already in use"))
    assert not port_taken(OSError(errno.EACCES, "Permission denied"))

    def broken(port: int) -> None:
        raise RuntimeError("exited with 1 while starting: no such model")

    with pytest.raises(RuntimeError, match="no such model"):
        start_on_free_port(broken)


def test_it_gives_up_after_a_few_attempts() -> None:
    calls: list[int] = []

    def always_taken(port: int) -> None:
        calls.append(port)
        raise OSError(errno.EADDRINUSE, "Address already in use")

    with pytest.raises(OSError):
        start_on_free_port(always_taken, attempts=3)
    assert len(calls) == 3
