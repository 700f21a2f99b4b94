"""Overload with ``queue_per_slot``: a full network refuses at once, with Retry-After."""

from __future__ import annotations

import asyncio

from fakes import ANSWER, MODEL, FakeEngine, LocalNetwork, assert_openai_error, eventually

from lichen.routing.scheduler import Scheduler
from lichen.storage.repositories import RequestRecord

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def _scheduler(net: LocalNetwork) -> Scheduler:
    scheduler = net.completions.router.scheduler
    assert isinstance(scheduler, Scheduler)
    return scheduler


async def test_a_full_network_refuses_without_asking_the_node_and_admits_again(
    net: LocalNetwork,
) -> None:
    engine = FakeEngine(slots=1, fail_after=1, failure="stall")  # holds its slot
    node = await net.add_node(engine, "n0")
    _scheduler(net).queue_per_slot = 0  # only free slots
    async with net.client.stream("POST", "/v1/chat/completions", json=BODY | {"stream": True}):
        await eventually(engine.stalled.is_set, what="the first job to hold the slot")
        refused = await net.client.post("/v1/chat/completions", json=BODY)
        assert_openai_error(refused, 503, "no_capacity")
        assert int(refused.headers["retry-after"]) >= 1
        streamed = await net.client.post("/v1/chat/completions", json=BODY | {"stream": True})
        assert streamed.status_code == 503 and "retry-after" in streamed.headers
        assert len(engine.requests) == 1  # the refusals never reached the node
    # The held stream ended: once its job is gone, requests are admitted again.
    engine.fail_after = None
    await eventually(lambda: net.connection(node).state.inflight == 0, what="the slot to free")
    answer = await net.client.post("/v1/chat/completions", json=BODY)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "".join(ANSWER)


async def test_without_the_setting_a_busy_node_still_queues(net: LocalNetwork) -> None:
    engine = FakeEngine(slots=1, fail_after=1, failure="stall")
    await net.add_node(engine, "n0")
    assert _scheduler(net).queue_per_slot is None
    async with net.client.stream("POST", "/v1/chat/completions", json=BODY | {"stream": True}):
        await eventually(engine.stalled.is_set, what="the first job to hold the slot")
        engine.fail_after = None
        queued = await net.client.post("/v1/chat/completions", json=BODY)
        assert queued.status_code == 200, queued.text  # the node took it past its slot
    assert len(engine.requests) == 2


async def test_a_refusal_is_answered_before_its_record_is_written(net: LocalNetwork) -> None:
    engine = FakeEngine(slots=1, fail_after=1, failure="stall")  # holds its slot
    await net.add_node(engine, "n0")
    _scheduler(net).queue_per_slot = 0  # only free slots
    release = asyncio.Event()
    written: list[RequestRecord] = []

    async def slow_record(record: RequestRecord) -> None:  # a database that is checkpointing
        await release.wait()
        written.append(record)

    async with net.client.stream("POST", "/v1/chat/completions", json=BODY | {"stream": True}):
        await eventually(engine.stalled.is_set, what="the first job to hold the slot")
        net.completions.record = slow_record
        async with asyncio.timeout(10):  # the refusal must not wait for the write
            refused = await net.client.post("/v1/chat/completions", json=BODY)
        assert_openai_error(refused, 503, "no_capacity")
        assert written == []
        drained = asyncio.create_task(net.completions.drain())
        for _ in range(10):
            await asyncio.sleep(0)
        assert not drained.done(), "drain returned with a record still being written"
        release.set()
        async with asyncio.timeout(10):
            await drained
        assert [(r.status, r.model, r.kind) for r in written] == [(503, MODEL, "chat")]
        engine.fail_after = None
