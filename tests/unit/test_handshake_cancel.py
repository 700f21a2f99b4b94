"""A cancellation that arrives together with a handshake reply still cancels.

Python 3.11's ``asyncio.wait_for`` returned the inner result when the caller was
cancelled in the same loop turn as that result arrived, so the cancellation was lost:
a node refused by its tracker then waited forever for its model seeder, which had
swallowed its cancel that way and reconnected (the e2e test of a second node from
one data dir timed out). Timeouts now use ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lichen.identity.store import load_identity
from lichen.transport.handshake import client_handshake
from lichen.wire.messages import Challenge, Message


class OneReplyLink:
    """A link whose first recv() waits for ``reply``; sends go nowhere."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.sent: list[Message] = []

    async def send(self, msg: Message) -> None:
        self.sent.append(msg)

    async def recv(self) -> Message:
        return await self.reply

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass

    @property
    def remote(self) -> str:
        return "test"


async def test_a_cancel_in_the_same_turn_as_the_challenge_is_not_swallowed(
    tmp_path: Path,
) -> None:
    identity = load_identity(tmp_path, node_name="box")
    link = OneReplyLink()
    handshake = asyncio.create_task(
        client_handshake(
            link,
            device_key=identity.device_key,
            device_certificate=identity.device_certificate,
            expected_network_key=bytes(32),
        )
    )
    await asyncio.sleep(0)
    assert [type(m).__name__ for m in link.sent] == ["Hello"]  # it waits for the Challenge
    link.reply.set_result(
        Challenge(network_key=bytes(32), network_sig=bytes(64), tracker_nonce=bytes(32))
    )
    handshake.cancel()
    # Swallowed, the handshake would go on and fail on the made-up proof instead.
    with pytest.raises(asyncio.CancelledError):
        await handshake
