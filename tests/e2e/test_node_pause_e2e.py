"""A node pauses llama.cpp for a job nobody reads, and continues it when read (issue 10)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from harness import DEFAULT_MODEL

from lichen.engines.llamacpp import LlamaCppEngine, LlamaModelConfig
from lichen.node.jobs import PAUSE_AFTER, JobRunner
from lichen.wire.messages import (
    ChatMessage,
    GenerationRequest,
    JobChunk,
    JobEnd,
    JobStart,
    Message,
    SamplingParams,
)

pytestmark = pytest.mark.e2e

WINDOW = 8
MAX_TOKENS = 120


def test_an_unread_job_pauses_llamacpp_and_a_late_reader_gets_all(models_dir: Path) -> None:
    path = next((models_dir / DEFAULT_MODEL).glob("*.gguf"))
    config = LlamaModelConfig(
        DEFAULT_MODEL, path, "", parallel=1, ctx_size=2048, threads=1, batch_threads=1
    )
    request = GenerationRequest(
        kind="chat",
        model=DEFAULT_MODEL,
        messages=[ChatMessage(role="user", content="Write a long story about a fox.")],
        params=SamplingParams(max_tokens=MAX_TOKENS, temperature=0, seed=1),
    )

    async def run() -> tuple[list[JobChunk], JobEnd, int, float]:
        engine = await LlamaCppEngine.start([config])
        sent: list[Message] = []

        async def send(msg: Message) -> None:
            sent.append(msg)

        runner = JobRunner(engine)
        try:
            runner.start(JobStart(job_id="j", request=request, deadline_ms=0, window=WINDOW), send)
            for _ in range(600):  # until the job pauses (the engine would go on to 120)
                if runner.stats.jobs_paused:
                    break
                await asyncio.sleep(0.05)
            paused_at = engine.load().free_slots  # nothing decodes while paused
            chunks = [m for m in sent if isinstance(m, JobChunk)]
            assert len(chunks) == WINDOW
            while not any(isinstance(m, JobEnd) for m in sent):
                runner.credit("j", WINDOW)
                await asyncio.sleep(0.05)
            assert await runner.wait_idle(60)
        finally:
            await engine.close()
        end = next(m for m in sent if isinstance(m, JobEnd))
        return (
            [m for m in sent if isinstance(m, JobChunk)],
            end,
            runner.stats.jobs_paused,
            paused_at,
        )

    chunks, end, paused, free_while_paused = asyncio.run(run())
    assert paused >= 1
    assert free_while_paused == 1  # the generation was closed: its slot is free
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    text = "".join(c.text for c in chunks)
    assert text.strip()
    # Usage: the tokens produced over every segment (llama.cpp may count an end token).
    assert end.usage.completion_tokens >= len(chunks) - 1
    assert end.usage.completion_tokens <= MAX_TOKENS + 1
    assert len(chunks) > WINDOW + PAUSE_AFTER  # it continued after the pause
