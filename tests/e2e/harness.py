"""Real ``lichen`` processes for end-to-end tests, always reaped.

A :class:`Harness` owns a temp root. Each process it starts gets its own data dir
under that root, a free port, an environment scrubbed of the developer's
``LICHEN_*`` variables (plus ``LICHEN_THREADS=1 LICHEN_BATCH_THREADS=1`` so several
llama.cpp instances share two cores), and its stdout/stderr captured to files
(``<root>/<name>.stdout.log`` / ``.stderr.log``). :meth:`Harness.close` stops every
process it started (SIGTERM, then SIGKILL for the whole process group).

One all-in-one network::

    with Harness(tmp_path, models_dir=models_dir) as h:
        up = h.up()                      # `lichen up` on a free port, /health is 200
        httpx.get(up.url + "/v1/models")

Several roles (once those commands exist)::

    tracker = h.start("tracker", ["tracker", "--port", "{port}", "--data-dir", "{data_dir}"])
    nodes = [
        h.start(f"node{i}", ["node", "--join", invite, "--data-dir", "{data_dir}"],
                ready=LogReady(r"joined tracker"))
        for i in range(3)
    ]

``{port}``, ``{data_dir}`` and ``{models_dir}`` in arguments are filled in per process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from ports import port_taken, start_on_free_port

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "smollm2-135m"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


def lichen_argv() -> list[str]:
    """How to run the ``lichen`` console script of the interpreter running the tests."""
    script = Path(sys.executable).parent / "lichen"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "lichen.cli.main"]


def scrubbed_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any ``LICHEN_*`` variable, with test-friendly defaults."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LICHEN_")}
    env.update(
        LICHEN_THREADS="1",
        LICHEN_BATCH_THREADS="1",
        # Public trackers audit by default: probe jobs at random times would add load and
        # jobs to tests about other things (the audit tests build their own tracker).
        LICHEN_AUDITS="false",
        PYTHONUNBUFFERED="1",
        NO_COLOR="1",
        TERM="dumb",
        COLUMNS="200",
    )
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class HttpReady:
    """Ready when ``GET path`` answers ``status``."""

    path: str = "/health"
    status: int = 200


@dataclass(frozen=True)
class LogReady:
    """Ready when stdout or stderr has a line matching ``pattern``."""

    pattern: str


Ready = HttpReady | LogReady | None

_live: weakref.WeakSet[LichenProcess] = weakref.WeakSet()


@atexit.register
def _reap_leftovers() -> None:  # a last resort if a test run is interrupted
    for process in list(_live):
        process.kill()


@dataclass(eq=False)
class LichenProcess:
    """One ``lichen`` subprocess with captured logs."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_dir: Path
    port: int | None = None
    data_dir: Path | None = None
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        assert self.port is not None, f"{self.name} has no port"
        return f"http://{self.host}:{self.port}"

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.name}.stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}.stderr.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    def start(self) -> LichenProcess:
        assert self.proc is None, f"{self.name} already started"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.log_dir,
                start_new_session=True,  # its own process group: reaped as a whole
            )
        _live.add(self)
        return self

    # --- observing ---

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        """Everything the process wrote so far (stdout, then stderr)."""
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_text(encoding="utf-8", errors="replace"))
        return "".join(parts)

    def log_bytes(self) -> bytes:
        data = b""
        for path in (self.stdout_path, self.stderr_path):
            with contextlib.suppress(FileNotFoundError):
                data += path.read_bytes()
        return data

    def tail(self, lines: int = 40) -> str:
        return f"--- last lines of {self.name} ---\n" + "\n".join(self.logs().splitlines()[-lines:])

    def wait_ready(self, ready: Ready, timeout: float = START_TIMEOUT_S) -> None:
        """Block until ``ready`` holds; fail with the log tail if the process dies first."""
        if ready is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise RuntimeError(f"{self.name} exited with {code} while starting\n{self.tail()}")
            if self._is_ready(ready):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout:.0f}s\n{self.tail()}")
            time.sleep(0.1)

    def _is_ready(self, ready: HttpReady | LogReady) -> bool:
        if isinstance(ready, LogReady):
            return re.search(ready.pattern, self.logs(), re.MULTILINE) is not None
        try:
            return httpx.get(self.url + ready.path, timeout=2.0).status_code == ready.status
        except httpx.HTTPError:
            return False

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.logs(), re.MULTILINE)
            if match:
                return match
            time.sleep(0.05)
        raise TimeoutError(f"{pattern!r} not in the logs of {self.name}\n{self.tail()}")

    # --- stopping ---

    def send_signal(self, sig: signal.Signals) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code; raises ``subprocess.TimeoutExpired`` if still running."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Ask the process to stop (``sig``); kill its whole group if it will not."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill()  # children it may have left (e.g. pip during a pull)
        _live.discard(self)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


class Harness:
    """Starts ``lichen`` processes under ``root`` and stops all of them on close."""

    def __init__(self, root: Path, *, models_dir: Path | None = None) -> None:
        self.root = root
        self.models_dir = models_dir
        self.processes: list[LichenProcess] = []

    def __enter__(self) -> Harness:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(
        self,
        name: str,
        args: Sequence[str],
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        ready: Ready = HttpReady(),
        timeout: float = START_TIMEOUT_S,
    ) -> LichenProcess:
        """Start ``lichen ARGS`` as ``name`` and wait until it is ``ready``.

        A free port is chosen unless ``port`` is given (another one if it was taken
        before the process bound it); ``LICHEN_DATA_DIR`` is ``<root>/<name>/data`` and
        ``LICHEN_MODELS_DIR`` the shared models dir.
        """
        if any(p.name == name for p in self.processes):
            raise ValueError(f"a process called {name!r} already exists")
        if port is None:
            return start_on_free_port(
                lambda free: self._start_on(name, args, free, env, ready, timeout)
            )
        return self._start_on(name, args, port, env, ready, timeout)

    def _start_on(
        self,
        name: str,
        args: Sequence[str],
        port: int,
        env: Mapping[str, str] | None,
        ready: Ready,
        timeout: float,
    ) -> LichenProcess:
        data_dir = self.root / name / "data"
        fill = {"port": str(port), "data_dir": str(data_dir), "models_dir": str(self.models_dir)}
        base = {"LICHEN_DATA_DIR": str(data_dir), "XDG_DATA_HOME": str(self.root / name / "xdg")}
        if self.models_dir is not None:
            base["LICHEN_MODELS_DIR"] = str(self.models_dir)
        process = LichenProcess(
            name=name,
            argv=[*lichen_argv(), *(a.format(**fill) for a in args)],
            env=scrubbed_env(base | dict(env or {})),
            log_dir=self.root,
            port=port,
            data_dir=data_dir,
        )
        self.processes.append(process)
        process.start()
        try:
            process.wait_ready(ready, timeout)
        except BaseException as exc:
            process.stop()
            if port_taken(exc):  # start_on_free_port tries another port under this name
                self.processes.remove(process)
                process.stdout_path.unlink(missing_ok=True)
                process.stderr_path.unlink(missing_ok=True)
            raise
        return process

    def up(
        self,
        name: str = "up",
        *,
        model: str = DEFAULT_MODEL,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = START_TIMEOUT_S,
    ) -> LichenProcess:
        """``lichen up`` on a free port, ready when ``/health`` is 200 (its node joined).

        Four slots and a 4096-token context keep several of these light on a small machine.
        """
        defaults = {"LICHEN_PARALLEL": "4", "LICHEN_CTX_SIZE": "4096"}
        return self.start(
            name,
            ["up", "--port", "{port}", "--data-dir", "{data_dir}", "--model", model, *args],
            env=defaults | dict(env or {}),
            timeout=timeout,
        )

    def close(self) -> None:
        errors = []
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(exc)
        if errors:
            raise errors[0]
