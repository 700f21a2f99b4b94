"""The tracker's WebSocket edge: malformed, oversized or foreign frames get a typed refusal."""

from __future__ import annotations

import msgspec
import pytest
from fakes import LocalNetwork
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from lichen.errors import ErrorCode
from lichen.tracker.service import NODE_PATH
from lichen.wire import codec
from lichen.wire.messages import PROTOCOL_VERSION, Error, JobChunk


async def _refusal(ws: ClientConnection) -> tuple[Error, int]:
    """The Error frame the tracker sends before closing, and the close code."""
    frame = await ws.recv()
    assert isinstance(frame, bytes)
    msg = codec.decode(frame)
    assert isinstance(msg, Error), msg
    with pytest.raises(ConnectionClosed):
        await ws.recv()
    assert ws.close_code is not None
    return msg, ws.close_code


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xc1 not msgpack", ErrorCode.PROTOCOL_ERROR),
        (msgspec.msgpack.encode([PROTOCOL_VERSION, {"t": "nope"}]), ErrorCode.PROTOCOL_ERROR),
        (
            msgspec.msgpack.encode([PROTOCOL_VERSION + 1, {"t": "hello"}]),
            ErrorCode.UNSUPPORTED_VERSION,
        ),
        (b"\x00" * (codec.MAX_FRAME_BYTES + 1), ErrorCode.FRAME_TOO_LARGE),
        (codec.encode(JobChunk(job_id="j", seq=0, text="x")), ErrorCode.PROTOCOL_ERROR),
    ],
    ids=["garbage", "unknown-tag", "future-version", "oversized", "job-before-hello"],
)
async def test_bad_first_frames_are_refused_with_a_typed_error(
    net: LocalNetwork, frame: bytes, code: ErrorCode
) -> None:
    url = f"ws://127.0.0.1:{net.port}{NODE_PATH}"
    async with connect(url, max_size=None, compression=None) as ws:
        await ws.send(frame)
        error, close_code = await _refusal(ws)
    assert error.code == code.value
    assert close_code == 4000 + code.http_status % 1000
    assert len(net.tracker.registry) == 0


async def test_text_frames_are_not_part_of_the_protocol(net: LocalNetwork) -> None:
    async with connect(f"ws://127.0.0.1:{net.port}{NODE_PATH}") as ws:
        await ws.send('{"t": "hello"}')
        error, _ = await _refusal(ws)
    assert error.code == ErrorCode.PROTOCOL_ERROR.value
