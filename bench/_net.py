"""A real multi-process network for benchmarks: ``lichen tracker`` + ``lichen node`` processes.

Every process gets its own data dir under a temp root and its own process group;
:meth:`BenchNetwork.close` (also run at exit) stops them all by process id.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS_DIR = REPO / ".cache" / "models"


def lichen_argv() -> list[str]:
    script = Path(sys.executable).parent / "lichen"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lichen.cli.main"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(eq=False)
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    data_dir: Path
    log: Path

    def kill(self) -> None:
        """SIGKILL the whole process group (no goodbye: a crashed machine)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class BenchNetwork:
    """A public tracker (with gateway) and nodes joining it by invite."""

    models_dir: Path = DEFAULT_MODELS_DIR
    threads: int = 1
    parallel: int = 2
    ctx_size: int = 4096
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lichen-bench-")))
    procs: list[Proc] = field(default_factory=list)
    port: int = 0
    token: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # more LICHEN_* for every process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LICHEN_")}
        env |= {
            "LICHEN_THREADS": str(self.threads),
            "LICHEN_BATCH_THREADS": str(self.threads),
            "LICHEN_PARALLEL": str(self.parallel),
            "LICHEN_CTX_SIZE": str(self.ctx_size),
            "LICHEN_MODELS_DIR": str(self.models_dir),
            "LICHEN_LOG_LEVEL": "WARNING",
            "LICHEN_ADMISSIONS_PER_IP_HOUR": "1000",
            "LICHEN_OPERATOR_SURFACES": "open",  # the bench reads /v1/network
            "XDG_DATA_HOME": str(self.root / "xdg"),
        }
        return env | self.extra | (extra or {})

    def _spawn(self, name: str, args: list[str], data_dir: Path | None = None) -> Proc:
        data_dir = data_dir or self.root / name
        log = self.root / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [*lichen_argv(), *args, "--data-dir", str(data_dir)],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, data_dir, log)
        self.procs.append(proc)
        return proc

    def start_tracker(self) -> Proc:
        self.port = self.port or free_port()
        proc = self._spawn("tracker", ["tracker", "--public", "--port", str(self.port)])
        self._wait(lambda: self._get("/v1/network") is not None, proc, "the tracker")
        result = subprocess.run(
            [
                *lichen_argv(),
                "invite",
                "create",
                "--max-uses",
                "0",
                "--data-dir",
                str(proc.data_dir),
            ],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
        )
        self.token = result.stdout.strip()
        return proc

    def start_node(self, name: str, data_dir: Path | None = None) -> Proc:
        args = ["node", "--name", name, "--model", "smollm2-135m"]
        if data_dir is None:
            args += ["--join", self.token]
        proc = self._spawn(name, args, data_dir)
        self._wait(lambda: name in self.connected(), proc, f"node {name}")
        return proc

    def connected(self) -> dict[str, dict[str, Any]]:
        view = self._get("/v1/network") or {"nodes": []}
        return {n["name"]: n for n in view["nodes"]}

    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            r = httpx.get(self.url + path, timeout=5, trust_env=False)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def _wait(self, ready: Any, proc: Proc, what: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start:\n{proc.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> BenchNetwork:
        atexit.register(self.close)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
