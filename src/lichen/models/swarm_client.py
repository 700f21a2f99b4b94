"""A node's side of the transfer link: ask for chunk lists and chunks, serve its own.

:class:`SwarmClient` keeps one authenticated WebSocket to the tracker's
``/v1/catalog/link``. Requests are multiplexed by id; the tracker's relay
requests (another node wants a chunk this node holds) are answered from
:class:`~lichen.models.holdings.Holdings`. Downloading a whole model is
:mod:`lichen.models.download`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from lichen.errors import ErrorCode, LichenError, parse_code
from lichen.identity.store import Identity
from lichen.models.catalog_sign import verify_chunk_list
from lichen.models.chunks import ChunkList
from lichen.models.holdings import Holdings
from lichen.tasks import cancel_and_wait
from lichen.transport.handshake import client_handshake
from lichen.transport.link import ClientLink, LinkClosed
from lichen.wire.codec import MAX_FRAME_BYTES
from lichen.wire.messages import (
    ChunkAt,
    ChunkBad,
    ChunkData,
    ChunkFail,
    ChunkGet,
    ChunkListData,
    ChunkListGet,
    Error,
    SwarmHave,
)

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 180.0  # the tracker may be fetching the chunk from the model's source
DIRECT_TIMEOUT_S = 20.0  # one chunk straight from a peer
DIRECT_MAX = 4 << 20  # bytes read from a peer at most (a chunk is 1 MiB)


class SwarmClient:
    """One transfer link to the tracker (use ``async with``)."""

    def __init__(
        self,
        *,
        identity: Identity,
        link_url: str,
        network_key: bytes,
        holdings: Holdings,
        invite: str = "",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.identity = identity
        self.tls = tls
        self.link_url = link_url
        self.network_key = network_key
        self.holdings = holdings
        self.invite = invite
        self.closed = asyncio.Event()
        self.served = 0  # chunks this node served to peers
        self.port = 0  # this node's direct chunk port, announced to the tracker (0: none)
        self._http: httpx.AsyncClient | None = None
        self._conn: ClientConnection | None = None
        self._link: ClientLink | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next = 0
        self._error: LichenError | None = None

    async def __aenter__(self) -> SwarmClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        self._conn = await connect(
            self.link_url,
            compression=None,
            max_size=MAX_FRAME_BYTES,
            open_timeout=10,
            proxy=None,
            ssl=self.tls,
        )
        link = ClientLink(self._conn)
        try:
            await client_handshake(
                link,
                device_key=self.identity.device_key,
                device_certificate=self.identity.device_certificate,
                expected_network_key=self.network_key,
                invite=self.invite,
            )
        except BaseException:
            await self._conn.close()
            raise
        self._link = link
        self._reader = asyncio.create_task(self._read(link), name="swarm-link")
        await self.announce()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        await cancel_and_wait(self._reader, quiet=True)
        if self._conn is not None:
            await self._conn.close()
        self._fail_pending(LichenError(ErrorCode.NODE_FAILED, "transfer link closed"))
        self.closed.set()

    async def wait_closed(self) -> None:
        await self.closed.wait()
        if self._error is not None:
            raise self._error

    async def announce(self) -> None:
        await self._send(SwarmHave(models=self.holdings.message().models, port=self.port))

    async def chunk_list(self, name: str, *, known: int = 0) -> ChunkList:
        reply = await self._request(lambda rid: ChunkListGet(req_id=rid, name=name, known=known))
        assert isinstance(reply, ChunkListData)
        chunks = verify_chunk_list(reply.signed, self.network_key)
        if chunks.name != name:
            raise LichenError(ErrorCode.PROTOCOL_ERROR, "chunk list for another model")
        return chunks

    async def chunk(
        self, model: str, index: int, sha256: str, *, direct: bool = False, limit: int = 0
    ) -> tuple[bytes, str]:
        """The chunk's bytes (not yet verified: the caller checks) and who served them.

        ``direct``: the tracker may send us to a peer that accepts connections (at most
        ``limit`` bytes are read from it); otherwise it answers itself or relays.
        """
        reply = await self._request(
            lambda rid: ChunkGet(req_id=rid, model=model, index=index, sha256=sha256, direct=direct)
        )
        if isinstance(reply, ChunkAt):
            return await self._direct(reply.url, limit or DIRECT_MAX), reply.holder
        assert isinstance(reply, ChunkData)
        return reply.data, reply.holder

    async def _direct(self, url: str, limit: int) -> bytes:
        """GET a chunk from a peer; unreachable or oversized is a retryable error."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=DIRECT_TIMEOUT_S, trust_env=False)
        data = bytearray()
        try:
            async with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise LichenError(ErrorCode.NOT_FOUND, f"peer answered {response.status_code}")
                async for part in response.aiter_bytes():
                    data += part
                    if len(data) > limit:
                        break  # the caller's check refuses it
        except httpx.HTTPError as exc:
            raise LichenError(ErrorCode.TIMEOUT, f"peer unreachable: {exc}") from None
        return bytes(data)

    async def report_bad(self, model: str, index: int, holder: str) -> None:
        with contextlib.suppress(LinkClosed, LichenError):
            await self._send(ChunkBad(model=model, index=index, holder=holder))

    # -- internals -----------------------------------------------------------------

    async def _send(self, msg: Any) -> None:
        if self._link is None or self.closed.is_set():
            raise LinkClosed("transfer link not open")
        await self._link.send(msg)

    async def _request(self, make: Any) -> ChunkData | ChunkListData | ChunkAt:
        self._next += 1
        req_id = self._next
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = waiter
        try:
            try:
                await self._send(make(req_id))
            except LinkClosed as exc:
                raise LichenError(ErrorCode.NODE_FAILED, "transfer link closed") from exc
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                reply = await waiter
        except TimeoutError:
            raise LichenError(ErrorCode.TIMEOUT, "the tracker did not answer in time") from None
        finally:
            self._pending.pop(req_id, None)
        if isinstance(reply, ChunkFail):
            raise LichenError(
                parse_code(reply.code, unknown=ErrorCode.PROTOCOL_ERROR), reply.message
            )
        return reply  # type: ignore[no-any-return]

    async def _read(self, link: ClientLink) -> None:
        try:
            while True:
                msg = await link.recv()
                if isinstance(msg, ChunkData | ChunkFail | ChunkListData | ChunkAt):
                    waiter = self._pending.get(msg.req_id)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(msg)
                elif isinstance(msg, ChunkGet):
                    asyncio.create_task(self._serve(msg))  # noqa: RUF006 (bounded by the tracker)
                elif isinstance(msg, Error):
                    raise LichenError(
                        parse_code(msg.code, unknown=ErrorCode.PROTOCOL_ERROR), msg.message
                    )
                else:
                    raise LichenError(
                        ErrorCode.PROTOCOL_ERROR, f"unexpected {type(msg).__name__} from tracker"
                    )
        except LinkClosed:
            pass
        except LichenError as error:
            self._error = error
            log.warning("transfer link: %s", error.message)
        finally:
            self.closed.set()
            self._fail_pending(
                self._error or LichenError(ErrorCode.NODE_FAILED, "transfer link closed")
            )

    async def _serve(self, msg: ChunkGet) -> None:
        data = await asyncio.to_thread(self.holdings.read, msg.model, msg.index, msg.sha256)
        reply: ChunkData | ChunkFail
        if data is None:
            reply = ChunkFail(req_id=msg.req_id, code=ErrorCode.NOT_FOUND.value, message="no")
        else:
            reply = ChunkData(req_id=msg.req_id, data=data)
            self.served += 1
        with contextlib.suppress(LinkClosed):
            await self._send(reply)

    def _fail_pending(self, error: LichenError) -> None:
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._pending.clear()
