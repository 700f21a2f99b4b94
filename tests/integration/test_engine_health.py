"""Engine health reaches the network, and a stuck engine cannot block shutdown (issue 10).

- a node whose engine reports a stall heartbeats as draining: the tracker stops
  routing to it, and comes back when the engine moves again;
- ``/health`` of a gateway answers 503 with the problem a health check names
  (``lichen up`` adds its engine's watchdog);
- SIGTERM with a llama.cpp call that never returns: the process exits anyway
  after the grace period, saying why (a real subprocess, a scripted stuck server).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
from fakes import FakeEngine, eventually

from lichen.config import Settings
from lichen.engines.base import EngineLoad
from lichen.identity.store import load_identity
from lichen.node.agent import NodeAgent, NodeConfig
from lichen.roles.tracker import tracker_stack


class StallingEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__(model="alpha")
        self.stalled_now = False

    def load(self) -> EngineLoad:
        base = super().load()
        return EngineLoad(base.free_slots, base.queue_depth, base.tokens_per_s, self.stalled_now)


def _chat() -> dict[str, object]:
    return {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}


async def test_stalled_engine_takes_no_new_work_until_it_moves(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "tracker",
        host="127.0.0.1",
        port=0,
        network_mode="public",
        heartbeat_s=0.1,
    )
    async with tracker_stack(settings, load_identity(settings.data_dir)) as stack:
        engine = StallingEngine()
        agent = NodeAgent(
            load_identity(tmp_path / "node", node_name="n1"),
            engine,
            NodeConfig(
                tracker_url=stack.local_node_url,
                name="n1",
                network_key=stack.identity.network_public,
            ),
        )
        task = asyncio.create_task(agent.run())
        try:
            async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
                await eventually(lambda: len(stack.tracker.registry) == 1, what="the join")
                assert (await client.post("/v1/chat/completions", json=_chat())).status_code == 200
                engine.stalled_now = True
                conn = stack.tracker.registry.get(agent.identity.peer_id)
                assert conn is not None
                await eventually(lambda: conn.state.draining, what="the stall heartbeat")
                refused = await client.post("/v1/chat/completions", json=_chat())
                assert refused.status_code == 503, refused.text
                assert (await client.get("/health")).status_code == 503
                engine.stalled_now = False
                await eventually(lambda: not conn.state.draining, what="the recovery")
                assert (await client.post("/v1/chat/completions", json=_chat())).status_code == 200
        finally:
            await agent.stop()
            await asyncio.gather(task, return_exceptions=True)


async def test_health_names_the_problem_a_check_reports(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "t", host="127.0.0.1", port=0)
    async with tracker_stack(settings, load_identity(settings.data_dir)) as stack:
        problem: list[str | None] = [None]
        stack.health_checks.append(lambda: problem[0])
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
            assert (await client.get("/health")).json()["status"] == "no_capacity"
            problem[0] = "engine_stalled"
            r = await client.get("/health")
            assert r.status_code == 503 and r.json()["status"] == "engine_stalled"


_STUCK_PROCESS = textwrap.dedent(
    """
    import asyncio, logging, sys, threading
    from pathlib import Path
    from lichen.engines.llamacpp import LlamaCppEngine, LlamaModelConfig, _Loaded
    from lichen.logs import setup_logging
    from lichen.server import install_shutdown_signals
    from lichen.wire.messages import ChatMessage, GenerationRequest

    class Stuck:  # a llama.cpp call that never returns, and a loop that never stops
        def handle_chat_completions(self, body, callback):
            threading.Event().wait()
        def __del__(self):
            threading.Event().wait()

    async def main():
        setup_logging("INFO")
        stop = install_shutdown_signals(grace_s=0.2, close_margin_s=0.5)
        config = LlamaModelConfig(name="m", path=Path("m.gguf"), sha256="0" * 64)
        engine = LlamaCppEngine({"m": _Loaded(config, Stuck())}, close_timeout_s=0.2)
        request = GenerationRequest(
            kind="chat", model="m", messages=[ChatMessage(role="user", content="hi")]
        )
        events = engine.generate(request)
        job = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.2)
        print("ready", flush=True)
        await stop.wait()
        print("stopping", flush=True)
        job.cancel()
        await engine.close()
        logging.getLogger("stuck").info("main returned; the interpreter now waits for threads")

    asyncio.run(main())
    """
)


def test_sigterm_exits_after_the_grace_period_with_a_stuck_engine(tmp_path: Path) -> None:
    script = tmp_path / "stuck.py"
    script.write_text(_STUCK_PROCESS)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)  # generous: the deadline is 0.7 s after the signal
        _out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 1, err
    assert "exiting now" in err, err
    assert "main returned" in err, err  # the clean path ran, then the threads held it


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    script = tmp_path / "stuck.py"
    script.write_text(_STUCK_PROCESS.replace("grace_s=0.2", "grace_s=3600"))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline().strip() == "stopping"  # the clean path started
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        _out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 1 and "second stop signal" in err, err
