"""The in-process link ``lichen up`` joins its node with: frames both ways, the
WebSocket's close and back-pressure semantics, and the codec's checks kept."""

from __future__ import annotations

import asyncio

import pytest

from lichen.errors import ErrorCode, LichenError
from lichen.transport.link import LinkClosed, send_error
from lichen.transport.memory import memory_link_pair
from lichen.wire.messages import Error, Heartbeat, JobCredit


def _beat(free: int) -> Heartbeat:
    return Heartbeat(free_slots=free, queue_depth=0, tokens_per_s=1.0)


async def _spin() -> None:
    """Let every ready task run (no I/O here, so a blocked one stays blocked)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_messages_cross_both_ways_in_order() -> None:
    a, b = memory_link_pair()
    for n in range(1, 4):
        await a.send(JobCredit(job_id="j", n=n))
    await b.send(_beat(2))
    assert [await b.recv() for _ in range(3)] == [JobCredit(job_id="j", n=n) for n in (1, 2, 3)]
    assert await a.recv() == _beat(2)
    assert a.remote == b.remote == "in-process"


async def test_frames_sent_before_a_close_arrive_then_the_link_reads_closed() -> None:
    a, b = memory_link_pair()
    await send_error(a, LichenError(ErrorCode.IDENTITY_REVOKED, "revoked"))
    got = await b.recv()
    assert isinstance(got, Error) and got.code == "identity_revoked"
    with pytest.raises(LinkClosed):
        await b.recv()
    with pytest.raises(LinkClosed):
        await b.send(_beat(0))
    with pytest.raises(LinkClosed):
        await a.recv()  # our own end is closed too
    with pytest.raises(LinkClosed):
        await a.send(_beat(0))


async def test_a_close_wakes_a_reader_waiting_for_a_frame() -> None:
    a, b = memory_link_pair()
    reader = asyncio.create_task(b.recv())
    await _spin()
    assert not reader.done()
    await a.close()
    with pytest.raises(LinkClosed):
        await reader


async def test_a_sender_waits_while_its_peer_does_not_read() -> None:
    a, b = memory_link_pair(buffer_bytes=64)
    await a.send(_beat(1))  # one frame always fits
    blocked = asyncio.create_task(a.send(JobCredit(job_id="j" * 60, n=1)))
    await _spin()
    assert not blocked.done(), "the buffer was full: the send should wait"
    assert await b.recv() == _beat(1)
    await blocked
    assert await b.recv() == JobCredit(job_id="j" * 60, n=1)


async def test_closing_wakes_a_blocked_sender_with_link_closed() -> None:
    a, b = memory_link_pair(buffer_bytes=16)
    await a.send(_beat(1))
    blocked = asyncio.create_task(a.send(_beat(2)))
    await _spin()
    assert not blocked.done()
    await b.close(1001, "going away")
    with pytest.raises(LinkClosed, match="going away"):
        await blocked


async def test_the_frame_cap_holds_as_on_a_websocket() -> None:
    a, b = memory_link_pair(max_frame=96)
    with pytest.raises(LichenError) as refused:
        await a.send(JobCredit(job_id="x" * 120, n=1))
    assert refused.value.code is ErrorCode.FRAME_TOO_LARGE
    await a.send(_beat(0))  # the link is still usable
    assert await b.recv() == _beat(0)
