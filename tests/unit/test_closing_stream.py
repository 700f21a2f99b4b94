"""A streamed answer is closed and cleaned up however the response ends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message

from lichen.gateway.answer import ClosingStream


async def test_a_stream_whose_client_left_before_it_started_is_cleaned_up() -> None:
    started = closed = cleaned = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal started, closed
        started = True
        try:
            yield b"never sent"
        finally:
            closed = True

    async def cleanup() -> None:
        nonlocal cleaned
        cleaned = True

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        raise OSError("the client is gone")

    stream = ClosingStream(body(), media_type="text/event-stream")
    stream.cleanup = cleanup
    scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
    with pytest.raises(ClientDisconnect):
        await stream(scope, receive, send)
    assert cleaned and not started and not closed  # nothing ran, yet the lanes were settled
