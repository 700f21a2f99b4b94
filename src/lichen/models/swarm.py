"""The tracker's side of model transfer: the transfer link, holders, relay, verification.

Nodes open a WebSocket to ``/v1/catalog/link`` and authenticate exactly as on
the node link (network key proof, device certificate, invite, membership). On
it they ask for signed chunk lists and for chunks, announce which chunks they
hold (``SwarmHave``), and answer the tracker's relay requests: nodes sit behind
NAT, so a chunk held by a peer travels peer -> tracker -> requester. The
tracker checks every relayed chunk against the hash it vouches for before it
forwards it; a holder that serves a bad chunk gets a strike (three and it is no
longer asked) and a failure in the network's reputation, and the request goes
to the next holder or to the tracker's own chunk store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.websockets import WebSocket

from lichen.errors import ErrorCode, LichenError
from lichen.identity.handshake_crypto import ReplayGuard
from lichen.models.cache import ModelCache
from lichen.models.catalog_sign import sign_chunk_list
from lichen.models.chunk_server import CHUNKS_PATH
from lichen.models.chunks import MAX_CHUNKS, chunk_sha, is_sha256
from lichen.reputation.book import Reputation
from lichen.transport.handshake import Admission, server_handshake
from lichen.transport.link import Link, LinkClosed, ServerLink, send_error
from lichen.wire.messages import (
    ChunkAt,
    ChunkBad,
    ChunkData,
    ChunkFail,
    ChunkGet,
    ChunkListData,
    ChunkListGet,
    SwarmHave,
)

log = logging.getLogger(__name__)

LINK_PATH = "/v1/catalog/link"
MAX_HELD_MODELS = 256
MAX_REQUESTS = 64  # concurrent requests one link may have open at the tracker
MAX_STRIKES = 3  # bad chunks after which a holder is no longer asked
RELAY_TIMEOUT_S = 10.0
SOURCE_WAIT_S = 120.0  # how long a request waits for a chunk the tracker is still fetching
LIST_WAIT_S = 10.0  # how long a ChunkListGet waits for more chunks of a fetch in progress


def has_chunk(bitmap: bytes, index: int) -> bool:
    byte = index >> 3
    return index >= 0 and byte < len(bitmap) and bool(bitmap[byte] >> (index & 7) & 1)


@dataclass
class Holder:
    """One node's open transfer link."""

    peer_id: str
    link: Link
    have: dict[str, bytes] = field(default_factory=dict)  # model sha256 -> chunk bitmap
    pending: dict[int, asyncio.Future[ChunkData | ChunkFail]] = field(default_factory=dict)
    inflight: int = 0  # relay requests sent to this holder, not answered yet
    requests: int = 0  # this link's own requests being served
    strikes: int = 0
    next_id: int = 0
    direct_url: str = ""  # http://<address the tracker sees>:<announced port>, if any
    assigned: int = 0  # requesters sent to its direct endpoint so far

    def has(self, model: str, index: int) -> bool:
        bitmap = self.have.get(model)
        return bitmap is not None and has_chunk(bitmap, index)


@dataclass
class SwarmStats:
    """Bytes the tracker sent on transfer links, by where they came from."""

    from_store: int = 0  # chunks read from the tracker's own chunk store
    relayed: int = 0  # chunks a peer served, forwarded by the tracker
    bad_chunks: int = 0  # relayed chunks that failed verification (never forwarded)
    directed: int = 0  # requests sent to a peer's direct endpoint (no tracker egress)
    reported_bad: int = 0  # ChunkBad reports from nodes

    def as_json(self) -> dict[str, int]:
        return {
            "egress_bytes": self.from_store + self.relayed,
            "from_store_bytes": self.from_store,
            "relayed_bytes": self.relayed,
            "bad_chunks": self.bad_chunks,
            "directed_chunks": self.directed,
            "reported_bad": self.reported_bad,
        }


class SwarmHub:
    """Transfer links by peer id, and the routing of chunk requests among holders."""

    def __init__(
        self,
        cache: ModelCache,
        *,
        network_key: Ed25519PrivateKey,
        admission: Admission,
        reputation: Reputation | None = None,
        policy: bytes = b"",
        heartbeat_s: float = 15.0,
        relay_timeout_s: float = RELAY_TIMEOUT_S,
    ) -> None:
        self.relay_timeout_s = relay_timeout_s
        self.cache = cache
        self.network_key = network_key
        self.admission = admission
        self.reputation = reputation
        self.policy = policy
        self.heartbeat_s = heartbeat_s
        self.holders: dict[str, Holder] = {}
        self.stats = SwarmStats()
        self._replay = ReplayGuard()

    def view(self) -> dict[str, Any]:
        """``GET /v1/catalog/swarm``: who holds what (counts only) and the byte counters."""
        return {
            "object": "swarm",
            **self.stats.as_json(),
            "fetching": self.cache.fetching(),
            "holders": [
                {
                    "peer_id": h.peer_id,
                    "models": {
                        m: bin(int.from_bytes(b, "little")).count("1") for m, b in h.have.items()
                    },
                    "strikes": h.strikes,
                }
                for h in self.holders.values()
            ],
        }

    async def endpoint(self, ws: WebSocket) -> None:
        await ws.accept()
        link = ServerLink(ws)
        try:
            peer = await server_handshake(
                link,
                network_key=self.network_key,
                admission=self.admission,
                replay_guard=self._replay,
                heartbeat_s=self.heartbeat_s,
                policy=self.policy,
            )
        except (LichenError, LinkClosed, TimeoutError):
            return
        holder = Holder(peer.peer_id, link)
        replaced = self.holders.get(peer.peer_id)
        self.holders[peer.peer_id] = holder
        if replaced is not None:
            await replaced.link.close(1000, "replaced by a newer transfer link")
        tasks: set[asyncio.Task[None]] = set()
        try:
            await self._read(holder, tasks)
        except LichenError as error:
            log.warning("closing transfer link of %s: %s", peer.peer_id, error.message)
            await send_error(link, error)
        except LinkClosed:
            pass
        finally:
            if self.holders.get(peer.peer_id) is holder:
                del self.holders[peer.peer_id]
            for task in tasks:
                task.cancel()
            for waiter in holder.pending.values():
                if not waiter.done():
                    waiter.set_result(ChunkFail(req_id=0, code="node_failed", message="gone"))
            await link.close()

    async def _read(self, holder: Holder, tasks: set[asyncio.Task[None]]) -> None:
        while True:
            msg = await holder.link.recv()
            if isinstance(msg, SwarmHave):
                holder.have = _checked_have(msg)
                holder.direct_url = _direct_url(holder.link.remote, msg.port)
            elif isinstance(msg, ChunkData | ChunkFail):
                waiter = holder.pending.pop(msg.req_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(msg)
            elif isinstance(msg, ChunkGet | ChunkListGet):
                if holder.requests >= MAX_REQUESTS:
                    raise LichenError(ErrorCode.RATE_LIMITED, "too many chunk requests at once")
                holder.requests += 1
                task = asyncio.create_task(self._answer(holder, msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif isinstance(msg, ChunkBad):
                check = self._reported(holder, msg)
                if check is not None:
                    tasks.add(task := asyncio.create_task(check))
                    task.add_done_callback(tasks.discard)
            else:
                raise LichenError(
                    ErrorCode.PROTOCOL_ERROR, f"unexpected {type(msg).__name__} on a transfer link"
                )

    async def _answer(self, holder: Holder, msg: ChunkGet | ChunkListGet) -> None:
        reply: ChunkData | ChunkAt | ChunkListData | ChunkFail
        try:
            reply = await (
                self._chunk_list(msg) if isinstance(msg, ChunkListGet) else self._chunk(holder, msg)
            )
        except LichenError as error:
            reply = ChunkFail(req_id=msg.req_id, code=error.code.value, message=error.message)
        finally:
            holder.requests -= 1
        with contextlib.suppress(LinkClosed):
            await holder.link.send(reply)

    async def _chunk_list(self, msg: ChunkListGet) -> ChunkListData:
        if not 0 <= msg.known <= MAX_CHUNKS:
            raise LichenError(ErrorCode.INVALID_REQUEST, "bad chunk count", param="known")
        chunks = await self.cache.chunk_list(
            msg.name.strip().lower(), known=msg.known, wait_s=LIST_WAIT_S if msg.known else 0.0
        )
        return ChunkListData(req_id=msg.req_id, signed=sign_chunk_list(self.network_key, chunks))

    async def _chunk(self, requester: Holder, msg: ChunkGet) -> ChunkData | ChunkAt:
        if not (is_sha256(msg.model) and is_sha256(msg.sha256) and 0 <= msg.index < MAX_CHUNKS):
            raise LichenError(ErrorCode.INVALID_REQUEST, "malformed chunk request")
        expected = self.cache.expected(msg.model, msg.index)
        if expected is None:
            data = await self.cache.wait_chunk(msg.model, msg.index, SOURCE_WAIT_S)
            expected = self.cache.expected(msg.model, msg.index)
            if data is None or expected is None:
                raise LichenError(ErrorCode.NOT_FOUND, "no holder has this chunk yet")
        if expected != msg.sha256:
            raise LichenError(ErrorCode.HASH_MISMATCH, "that is not this chunk's SHA-256")
        peers = [
            h
            for h in self.holders.values()
            if h is not requester and h.strikes < MAX_STRIKES and h.has(msg.model, msg.index)
        ]
        if msg.direct:
            direct = [h for h in peers if h.direct_url]
            if direct:  # the requester fetches it; the tracker's egress stays out of it
                peer = min(direct, key=lambda h: (h.strikes, h.assigned))
                peer.assigned += 1
                self.stats.directed += 1
                path = f"{CHUNKS_PATH}/{msg.model}/{msg.index}/{msg.sha256}"
                return ChunkAt(req_id=msg.req_id, url=peer.direct_url + path, holder=peer.peer_id)
        peers.sort(key=lambda h: (h.strikes, h.inflight))
        for peer in peers[:3]:
            data = await self._relay(peer, msg)
            if data is not None:
                self.stats.relayed += len(data)
                return ChunkData(req_id=msg.req_id, data=data, holder=peer.peer_id)
        data = await asyncio.to_thread(self.cache.chunk, msg.sha256)
        if data is None:
            data = await self.cache.wait_chunk(msg.model, msg.index, SOURCE_WAIT_S)
        if data is None or chunk_sha(data) != msg.sha256:
            raise LichenError(ErrorCode.NOT_FOUND, "no holder has this chunk now; try again")
        self.stats.from_store += len(data)
        return ChunkData(req_id=msg.req_id, data=data)

    async def _relay(self, peer: Holder, msg: ChunkGet) -> bytes | None:
        """Ask ``peer`` for the chunk; its bytes only if they hash right."""
        peer.next_id += 1
        req_id = peer.next_id
        waiter: asyncio.Future[ChunkData | ChunkFail] = asyncio.get_running_loop().create_future()
        peer.pending[req_id] = waiter
        peer.inflight += 1
        try:
            await peer.link.send(
                ChunkGet(req_id=req_id, model=msg.model, index=msg.index, sha256=msg.sha256)
            )
            async with asyncio.timeout(self.relay_timeout_s):
                reply = await waiter
        except LinkClosed:
            return None
        except TimeoutError:
            self._strike(peer, msg.index, "did not answer for chunk")  # a stall costs others
            return None
        finally:
            peer.inflight -= 1
            peer.pending.pop(req_id, None)
        if isinstance(reply, ChunkFail):
            return None
        if chunk_sha(reply.data) != msg.sha256:
            self.stats.bad_chunks += 1
            self._strike(peer, msg.index, "served a corrupted chunk")
            return None
        return reply.data

    def _strike(self, peer: Holder, index: int, what: str) -> None:
        peer.strikes += 1
        log.warning(
            "holder %s %s %d (strike %d); asking elsewhere", peer.peer_id, what, index, peer.strikes
        )
        if self.reputation is not None:
            self.reputation.job_failed(peer.peer_id)

    def _reported(self, reporter: Holder, msg: ChunkBad) -> Coroutine[Any, Any, None] | None:
        """A node says a chunk was bad; check the accused holder ourselves before any strike.

        Relayed chunks were verified here already; a chunk fetched directly was not, so
        the tracker asks the accused for it (verified, as a relay): only a holder that
        serves it wrong again is struck. A report alone never harms anyone.
        """
        self.stats.reported_bad += 1
        log.info("node %s reports chunk %d from %s as bad", reporter.peer_id, msg.index, msg.holder)
        accused = self.holders.get(msg.holder)
        expected = self.cache.expected(msg.model, msg.index)
        if accused is None or accused is reporter or expected is None:
            return None
        if reporter.requests >= MAX_REQUESTS:
            return None
        reporter.requests += 1
        probe = ChunkGet(req_id=0, model=msg.model, index=msg.index, sha256=expected)

        async def check() -> None:
            try:
                await self._relay(accused, probe)
            finally:
                reporter.requests -= 1

        return check()

    async def close(self) -> None:
        for holder in list(self.holders.values()):
            await holder.link.close(1001, "tracker shutting down")


def _direct_url(remote: str, port: int) -> str:
    """Where peers reach a holder: the address its link comes from, its announced port."""
    host = remote.rpartition(":")[0]
    if not port or not host or host == "?":
        return ""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _checked_have(msg: SwarmHave) -> dict[str, bytes]:
    if len(msg.models) > MAX_HELD_MODELS:
        raise LichenError(ErrorCode.PROTOCOL_ERROR, "too many models announced")
    have: dict[str, bytes] = {}
    for held in msg.models:
        if not is_sha256(held.sha256) or len(held.have) > MAX_CHUNKS // 8:
            raise LichenError(ErrorCode.PROTOCOL_ERROR, "malformed SwarmHave")
        have[held.sha256] = held.have
    return have
