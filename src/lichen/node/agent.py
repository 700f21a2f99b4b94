"""The node agent: dials out to a tracker, authenticates, serves jobs, reconnects.

Nodes behind NAT need no open port: the node opens the WebSocket (``lichen up``'s
own node opens an in-process link to its tracker instead). A network may
run several trackers: when one is unreachable or the link to it is lost, the agent
dials the next at once and backs off only after all failed
(:class:`~lichen.node.trackers.TrackerRotation`). Incoming
frames are dispatched by message type to small handlers; the job work lives in
:class:`~lichen.node.jobs.JobRunner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidURI

from lichen.engines.base import Engine, WatchesModels
from lichen.errors import ErrorCode, LichenError, parse_code
from lichen.identity.store import Identity
from lichen.identity.trust import TrustLevel
from lichen.ledger.receipts import ReceiptSigner
from lichen.node.jobs import JobRunner
from lichen.node.trackers import TrackerRotation, display_url
from lichen.privacy.node_side import NodePrivacy
from lichen.tasks import cancel_and_wait
from lichen.transport.handshake import client_handshake
from lichen.transport.link import ClientLink, Link, LinkClosed
from lichen.wire.codec import MAX_FRAME_BYTES
from lichen.wire.manifest import sign_manifest
from lichen.wire.messages import (
    EmbedStart,
    Error,
    Heartbeat,
    JobCancel,
    JobCredit,
    JobEnd,
    JobError,
    JobStart,
    Manifest,
    ModelInfo,
    Probe,
)

log = logging.getLogger(__name__)

# Opens the link to one tracker URL for one session: a WebSocket, or (``lichen up``) an
# in-process link to the tracker in the same process.
Dial = Callable[[str], AbstractAsyncContextManager[Link]]

# Identity problems will not fix themselves by retrying.
FATAL_CODES = {
    ErrorCode.IDENTITY_REVOKED,
    ErrorCode.IDENTITY_UNKNOWN,
    ErrorCode.INVITE_INVALID,
    ErrorCode.IDENTITY_EXPIRED,
    ErrorCode.UNSUPPORTED_VERSION,
    ErrorCode.MANIFEST_INVALID,
    ErrorCode.POLICY_FORBIDS,  # this node's settings refuse the network's policy
}


# After our link ended, an identity_in_use refusal may be that link, not yet dropped by
# the tracker (it drops a silent link after three heartbeats): retry for this long.
OWN_LINK_GRACE_S = 30.0

# While the operator has not approved this node, ask again this often at most.
PENDING_RETRY_S = 3.0


@dataclass
class NodeConfig:
    tracker_url: str  # ws(s)://host:port/v1/node/connect; the first tracker dialled
    name: str
    invite: str = ""
    network_key: bytes | None = None  # expected tracker network key (from the invite)
    trust: str = TrustLevel.COMMUNITY.value
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    refuse_policies: tuple[str, ...] = ()  # network policies this node will not serve
    telemetry: bool | None = False  # opted in to sending counters; None: the saved setting
    telemetry_interval_s: float = 60.0
    settings_dir: Path | None = None  # where the saved telemetry setting lives
    tls: ssl.SSLContext | None = None  # trust for a wss:// tracker (None: the system's CAs)
    other_tracker_urls: tuple[str, ...] = ()  # more trackers of the network, dialled in turn
    # A tracker whose machine died sends no close: a WebSocket ping unanswered for
    # ping_timeout_s ends the link, and the node moves on to another tracker.
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 10.0


class NodeAgent:
    """Keeps one authenticated link to one of the network's trackers and serves jobs over it."""

    def __init__(
        self, identity: Identity, engine: Engine, config: NodeConfig, *, dial: Dial | None = None
    ) -> None:
        """``dial`` opens the link to a tracker URL (default: a WebSocket to it)."""
        self.identity = identity
        self._dial: Dial = dial or self._dial_websocket
        self.engine = engine
        self.config = config
        self.runner = JobRunner(
            engine, ReceiptSigner(identity.device_key, identity.device_certificate)
        )
        self.privacy = NodePrivacy(
            refuse=config.refuse_policies,
            telemetry=config.telemetry,
            telemetry_interval_s=config.telemetry_interval_s,
            settings_dir=config.settings_dir,
        )
        self.connected = asyncio.Event()
        self.draining = False
        self.fatal: LichenError | None = None
        self.pending = False  # the tracker holds this node for the operator's approval
        self._link: Link | None = None
        self.joined_url: str | None = None  # the tracker this node is joined to right now
        self._stopping = False
        self._stopped = asyncio.Event()  # wakes a backoff wait when the node stops
        self._link_lost_at: float | None = None  # when our last joined link ended
        self._models_changed = asyncio.Event()
        self._sent_models: list[ModelInfo] | None = None
        if isinstance(engine, WatchesModels):
            engine.on_models_changed(self._models_changed.set)

    async def run(self) -> None:
        """Connect, serve, and reconnect until stopped or refused for good: to the next
        tracker at once, with backoff once every tracker failed in a row."""
        delay = self.config.backoff_initial_s
        trackers = TrackerRotation([self.config.tracker_url, *self.config.other_tracker_urls])
        while not self._stopping:
            url = trackers.current
            unreachable = ""  # why the tracker could not be reached (or the link ended)
            try:
                await self._session(url)
                delay = self.config.backoff_initial_s
            except LichenError as error:
                if error.code is ErrorCode.IDENTITY_IN_USE and not self._own_link_may_linger():
                    # Another process started from this data dir holds the link: retrying
                    # would only make the two kick each other off.
                    log.error("tracker refused this node: %s", error.message)
                    self.fatal = error
                    return
                if error.code in FATAL_CODES:
                    if error.code is not ErrorCode.POLICY_FORBIDS:  # that one is ours
                        log.error("tracker refused this node: %s", error.message)
                    self.fatal = error
                    return
                if error.code is ErrorCode.MEMBERSHIP_PENDING:
                    if not self.pending:
                        log.warning("%s", error.message)
                    self.pending = True
                elif error.code is ErrorCode.IDENTITY_IN_USE:
                    log.warning(
                        "%s; retrying (our previous link may not have closed yet)", error.message
                    )
                else:
                    log.warning("link to tracker failed: %s", error.message)
            except ssl.SSLCertVerificationError as exc:
                # An untrusted certificate will not fix itself by retrying.
                self.fatal = LichenError(
                    ErrorCode.HANDSHAKE_FAILED,
                    f"the tracker's TLS certificate is not trusted ({exc.verify_message}): "
                    "set LICHEN_TLS_CA_FILE (--tls-ca) to the CA that signed it",
                )
                log.error("%s", self.fatal.message)
                return
            except (OSError, LinkClosed, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                unreachable = type(exc).__name__
            finally:
                ran = self.connected.is_set()
                if ran:  # a session ran: reconnect quickly
                    delay = self.config.backoff_initial_s
                    self._link_lost_at = time.monotonic()
                    trackers.joined()
                self.connected.clear()
                self._link = None
                self.joined_url = None
            if self._stopping:
                break  # our own shutdown closes the link: nothing to report
            backoff = trackers.failed()  # every tracker failed in a row: back off
            if unreachable:
                log.info(
                    "%s (%s, %s); %s",
                    "link to tracker lost" if ran else "tracker unreachable",
                    display_url(url),
                    unreachable,
                    f"retrying in {delay:.1f}s"
                    if backoff
                    else f"trying tracker {display_url(trackers.current)}",
                )
            if not backoff:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay * (0.8 + 0.4 * random.random())):
                    await self._stopped.wait()
            cap = self.config.backoff_max_s
            delay = min(delay * 2, min(cap, PENDING_RETRY_S) if self.pending else cap)

    @contextlib.asynccontextmanager
    async def _dial_websocket(self, url: str) -> AsyncIterator[Link]:
        async with connect(
            url,
            compression=None,
            max_size=MAX_FRAME_BYTES,
            open_timeout=10,
            ping_interval=self.config.ping_interval_s,
            ping_timeout=self.config.ping_timeout_s,
            proxy=None,
            ssl=(self.config.tls or True) if url.startswith("wss:") else None,
        ) as conn:
            yield ClientLink(conn)

    async def _session(self, url: str) -> None:
        async with self._dial(url) as link:
            welcome, network_key = await client_handshake(
                link,
                device_key=self.identity.device_key,
                device_certificate=self.identity.device_certificate,
                expected_network_key=self.config.network_key,
                invite=self.config.invite,
            )
            if self.config.network_key is None:
                self.config.network_key = network_key  # pin it for reconnects
            self.privacy.accept(welcome.policy, network_key)  # may refuse the network
            if self.runner.receipts is not None:
                self.runner.receipts.session = welcome.session_id  # receipts name the link
            await link.send(self._manifest())
            self._link = link
            self.joined_url = url
            self.connected.set()
            self.pending = False
            log.info(
                "joined tracker %s as %s; serving %s",
                display_url(url),
                self.identity.peer_id,
                ", ".join(m.name for m in self._sent_models or []) or "no models",
            )
            beat = asyncio.create_task(self._heartbeats(link, welcome.heartbeat_s))
            watch = asyncio.create_task(self._watch_models(link))
            tele = asyncio.create_task(self.privacy.telemetry_loop(link.send, self.engine))
            try:
                await self._read(link)
            finally:
                await cancel_and_wait(beat, watch, tele)
                self.runner.cancel_all()

    def _own_link_may_linger(self) -> bool:
        """Whether an ``identity_in_use`` refusal may be our own previous link, which the
        tracker has not dropped yet (it does within a few heartbeats): worth a retry."""
        lost = self._link_lost_at
        return lost is not None and time.monotonic() - lost < OWN_LINK_GRACE_S

    def _manifest(self) -> Manifest:
        """The node's signed manifest for the models its engine serves right now."""
        models = self.engine.models()
        self._sent_models = models
        return sign_manifest(
            self.identity.device_key,
            name=self.config.name,
            peer_id=self.identity.peer_id,
            models=models,
            engines=sorted({m.engine for m in models}) or [self.engine.kind],
            trust=self.config.trust,
        )

    async def _watch_models(self, link: Link) -> None:
        """Re-send a signed manifest whenever the engine's model list changes."""
        while True:
            await self._models_changed.wait()
            self._models_changed.clear()
            if self.engine.models() != self._sent_models:
                log.info("the engine's models changed; sending a new manifest")
                with contextlib.suppress(LinkClosed):
                    await link.send(self._manifest())

    async def _read(self, link: Link) -> None:
        handlers: dict[type[Any], Callable[[Any], Awaitable[None]]] = {
            JobStart: self._on_job_start,
            Probe: self._on_probe,
            JobCredit: self._on_credit,
            JobCancel: self._on_cancel,
            EmbedStart: self._on_embed,
            Error: self._on_error,
        }
        while True:
            msg = await link.recv()
            handler = handlers.get(type(msg))
            if handler is None:
                raise LichenError(ErrorCode.PROTOCOL_ERROR, f"unexpected {type(msg).__name__}")
            await handler(msg)

    async def _send(self, msg: Any) -> None:
        link = self._link
        if link is None:
            raise LinkClosed("not connected")
        if isinstance(msg, JobEnd):
            self.privacy.counters.job_finished(msg.usage.completion_tokens)
        await link.send(msg)

    async def _on_job_start(self, msg: JobStart) -> None:
        if self.draining:
            await self._send(
                JobError(
                    job_id=msg.job_id, code=ErrorCode.NO_CAPACITY.value, message="node is draining"
                )
            )
            return
        self.runner.start(msg, self._send)

    async def _on_embed(self, msg: EmbedStart) -> None:
        if self.draining:
            await self._send(
                JobError(
                    job_id=msg.job_id, code=ErrorCode.NO_CAPACITY.value, message="node is draining"
                )
            )
            return
        self.runner.start_embed(msg, self._send)

    async def _on_probe(self, msg: Probe) -> None:
        await self._on_job_start(
            JobStart(job_id=msg.job_id, request=msg.request, deadline_ms=0, window=64)
        )

    async def _on_credit(self, msg: JobCredit) -> None:
        self.runner.credit(msg.job_id, msg.n)

    async def _on_cancel(self, msg: JobCancel) -> None:
        self.runner.cancel(msg.job_id)

    async def _on_error(self, msg: Error) -> None:
        raise LichenError(parse_code(msg.code, unknown=ErrorCode.PROTOCOL_ERROR), msg.message)

    async def _heartbeats(self, link: Link, every_s: float) -> None:
        while True:
            await self.heartbeat(link)
            await asyncio.sleep(every_s)

    async def heartbeat(self, link: Link | None = None) -> None:
        link = link or self._link
        if link is None:
            return
        load = self.engine.load()
        if self._sent_models is not None and self.engine.models() != self._sent_models:
            self._models_changed.set()  # an engine that changed without telling us
        with contextlib.suppress(LinkClosed):
            await link.send(
                Heartbeat(
                    free_slots=0 if self.draining or load.stalled else load.free_slots,
                    queue_depth=load.queue_depth,
                    tokens_per_s=load.tokens_per_s,
                    # a stalled engine takes no new work until it moves again
                    draining=self.draining or load.stalled,
                )
            )

    async def drain(self, timeout: float = 60.0) -> None:
        """Stop taking jobs, let running ones finish, then disconnect."""
        self.draining = True
        await self.heartbeat()
        finished = await self.runner.wait_idle(timeout)
        if not finished:
            log.warning("drain timed out with %d jobs running; cancelling", len(self.runner))
        await self.stop()

    async def stop(self) -> None:
        self._stopping = True
        self._stopped.set()
        self.runner.cancel_all()
        if self._link is not None:
            with contextlib.suppress(Exception):
                await self._link.close(1001, "node shutting down")
