"""The tracker service: accepts node links, keeps the registry live.

``TrackerService.endpoint`` is a Starlette WebSocket endpoint; the composition
roots mount it at :data:`NODE_PATH` on whatever ASGI app serves the tracker.
``TrackerService.in_process_link`` is the same door for a node in this process
(``lichen up``'s own): the same protocol over an in-memory link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.websockets import WebSocket

from lichen.errors import ErrorCode, LichenError
from lichen.identity.certs import DeviceCertificate
from lichen.identity.handshake_crypto import ReplayGuard
from lichen.identity.signing import peer_id as peer_id_of
from lichen.periodic import Periodic
from lichen.tracker.connection import NodeConnection
from lichen.tracker.registry import Registry
from lichen.tracker.relay import NodeRelay
from lichen.transport.handshake import Admission, Peer, server_handshake
from lichen.transport.link import Link, LinkClosed, ServerLink, send_error
from lichen.transport.memory import memory_link_pair
from lichen.wire.manifest import verify_manifest
from lichen.wire.messages import Manifest, ManifestBody, Telemetry

log = logging.getLogger(__name__)

NODE_PATH = "/v1/node/connect"

IN_USE_HINT = (
    "another node with this identity is already connected to the tracker (two nodes "
    "started from one data dir share an identity); give each node its own --data-dir"
)


class _OneLinkPerIdentity:
    """Admission that first refuses an identity whose link is alive, then asks ``inner``.

    Two processes started from one data dir share a device key; letting the second
    replace the first makes them kick each other off forever. A link whose heartbeats
    have been quiet for over ``stale_after_s`` is taken to be a dead one the tracker has
    not noticed yet: the newcomer (most likely the same node, restarted) replaces it.

    It also logs a node held for approval once (a pending node asks again every few
    seconds; the handshake logs the repeats at DEBUG).
    """

    def __init__(self, inner: Admission, registry: Registry, stale_after_s: float) -> None:
        self.inner = inner
        self.registry = registry
        self.stale_after_s = stale_after_s
        self.pending_logged: set[str] = set()

    def in_use(self, peer_id: str) -> bool:
        """Whether ``peer_id`` has a link that heartbeats have shown alive lately."""
        current = self.registry.get(peer_id)
        return (
            current is not None and time.monotonic() - current.state.last_seen <= self.stale_after_s
        )

    async def admit(self, cert: DeviceCertificate, invite: str, remote: str) -> str:
        if self.in_use(peer_id_of(cert.device_key)):
            raise LichenError(ErrorCode.IDENTITY_IN_USE, IN_USE_HINT)
        try:
            return await self.inner.admit(cert, invite, remote)
        except LichenError as error:
            if error.code is ErrorCode.MEMBERSHIP_PENDING:
                self._note_pending(peer_id_of(cert.device_key), error.message)
            raise

    def _note_pending(self, pid: str, message: str) -> None:
        """A pending node retries every few seconds: say so once, not every time."""
        if pid in self.pending_logged:
            return
        if len(self.pending_logged) >= 10_000:  # bounded; the worst case is a repeated line
            self.pending_logged.clear()
        self.pending_logged.add(pid)
        log.warning("%s", message)


class TrackerService:
    """Membership at the door, then a live registry of authenticated nodes."""

    def __init__(
        self,
        *,
        network_key: Ed25519PrivateKey,
        admission: Admission,
        registry: Registry | None = None,
        heartbeat_s: float = 1.0,
        missed_heartbeats: int = 3,
        policy: bytes = b"",
        on_leave: Callable[[Peer], Awaitable[None]] | None = None,
        relay: NodeRelay | None = None,
        telemetry: Callable[[str, Telemetry], Awaitable[None]] | None = None,
    ) -> None:
        self.network_key = network_key
        self.admission = admission
        self.registry = registry if registry is not None else Registry()
        self.on_leave = on_leave
        self.relay = relay  # a cluster shares this tracker's nodes with its gateways
        self.heartbeat_s = heartbeat_s
        self.dead_after_s = heartbeat_s * missed_heartbeats + 0.5
        self.policy = policy
        # Where opted-in nodes' Telemetry goes (the privacy feature's sink); None: dropped.
        self.telemetry = telemetry
        self._replay = ReplayGuard()
        self._door = _OneLinkPerIdentity(
            admission, self.registry, stale_after_s=heartbeat_s * 1.5 + 0.5
        )
        self._watchdog: Periodic | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._watchdog = Periodic(
            "tracker-watchdog",
            self._drop_silent,
            self.heartbeat_s / 2,
            log=log,
            failure="heartbeat watchdog round failed",
            delay_first=True,
        )
        self._watchdog.start()

    async def stop(self) -> None:
        if self._watchdog is not None:
            await self._watchdog.stop()
        for conn in self.registry:
            await conn.link.close(1001, "tracker shutting down")

    async def wait_for_nodes(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` nodes are registered (used by ``lichen up``)."""
        deadline = time.monotonic() + timeout
        while len(self.registry) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
        return True

    async def endpoint(self, ws: WebSocket) -> None:
        await ws.accept()
        await self.serve_link(ServerLink(ws))

    @contextlib.asynccontextmanager
    async def in_process_link(self, _url: str = "") -> AsyncIterator[Link]:
        """A node agent's ``dial`` for a node in this process: the node's end of an in-memory
        link whose other end this tracker serves like any WebSocket's, handshake included."""
        node_end, tracker_end = memory_link_pair()
        served = asyncio.create_task(self.serve_link(tracker_end), name="tracker-local-node")
        try:
            yield node_end
        finally:
            await node_end.close(1001, "node leaving")
            await asyncio.gather(served, return_exceptions=True)

    async def serve_link(self, link: Link) -> None:
        """Run one node's link from handshake to goodbye: a WebSocket's, or the in-process
        link of ``lichen up``'s own node."""
        try:
            peer = await server_handshake(
                link,
                network_key=self.network_key,
                admission=self._door,
                replay_guard=self._replay,
                heartbeat_s=self.heartbeat_s,
                policy=self.policy,
            )
            async with asyncio.timeout(self.dead_after_s * 3):
                first = await link.recv()
            if not isinstance(first, Manifest):
                raise LichenError(ErrorCode.PROTOCOL_ERROR, "expected a manifest after welcome")
            try:
                body = verify_manifest(
                    first, device_key=peer.certificate.device_key, peer_id=peer.peer_id
                )
            except LichenError as error:
                log.warning("refused manifest from %s: %s", peer.peer_id, error.message)
                await send_error(link, error)
                return
        except (LichenError, LinkClosed, TimeoutError):
            return  # already logged and answered by the handshake
        if self._door.in_use(peer.peer_id):
            # Two links of one identity got past the door at once (two processes started
            # together): the one registered first keeps serving, this one is refused.
            log.warning("refused node %s: identity_in_use (%s)", peer.peer_id, IN_USE_HINT)
            await send_error(link, LichenError(ErrorCode.IDENTITY_IN_USE, IN_USE_HINT))
            return
        conn = NodeConnection(
            link,
            peer,
            body,
            on_change=self._notify,
            on_manifest=self._manifest_changed,
            on_telemetry=self.telemetry,
            relay=self.relay,
        )
        replaced = self.registry.add(conn)
        if replaced is not None:
            await replaced.link.close(1000, "replaced by a newer connection")
        self._changed.set()
        if self.relay is not None:
            await self.relay.joined(conn, first)
        try:
            await conn.serve()
        except LichenError as error:
            log.warning("closing node %s: %s", peer.peer_id, error.message)
            await send_error(link, error)
        finally:
            if self.registry.remove(conn) and self.relay is not None:
                await self.relay.left(conn)
            conn.lost()
            self._changed.set()
            await link.close()
            if self.on_leave is not None:
                with contextlib.suppress(Exception):  # bookkeeping must not break shutdown
                    await self.on_leave(peer)

    async def disconnect(self, peer_id: str, error: LichenError) -> bool:
        """Tell a connected node why, then drop it at once; False if it is not connected."""
        conn = self.registry.get(peer_id)
        if conn is None:
            return False
        log.warning("disconnecting node %s: %s", peer_id, error.message)
        self.registry.remove(conn)
        if self.relay is not None:
            await self.relay.left(conn)
        conn.lost()
        self._changed.set()
        await send_error(conn.link, error)
        return True

    async def _manifest_changed(self, conn: NodeConnection, body: ManifestBody) -> None:
        self.registry.update_manifest(conn, body)

    async def _notify(self, _conn: NodeConnection) -> None:
        self._changed.set()

    async def _drop_silent(self) -> None:
        """Close links whose heartbeats stopped; the reader then unregisters them."""
        now = time.monotonic()
        for conn in self.registry:
            if now - conn.state.last_seen > self.dead_after_s:
                log.warning("node %s missed its heartbeats; dropping it", conn.peer_id)
                self.registry.remove(conn)
                if self.relay is not None:
                    await self.relay.left(conn)
                conn.lost()  # its jobs fail over now, not when the socket finally closes
                self._changed.set()
                await conn.link.close(1001, "heartbeat timeout")
