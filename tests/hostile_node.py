"""A hostile node for tests: Lichen's real codec, handshake and crypto, lying on demand.

Lichen's own :class:`~lichen.node.agent.NodeAgent` is honest by construction (the
product never fakes anything), so tests that need a node which lies, breaks or
floods use this one. It joins a real tracker over the real WebSocket protocol
with a real device certificate signed by the tracker owner's account (like
``fakes.start_owned_node``), so the tracker sees an authenticated member that
then misbehaves.

API (everything is a plain attribute or coroutine; nothing is global)::

    node = HostileNode(
        tmp_path / "evil",              # its data dir (keys are created there)
        owner_dir=tracker_dir,          # dir holding the tracker owner's keys/account.key
        url="ws://127.0.0.1:PORT/v1/node/connect",
        network_public=network_key,     # the tracker's network key (None: trust the first)
        name="evil",                    # node name in its manifest (any string: lie freely)
        models=[ModelInfo(...)],        # manifest models (default: one model, MODEL, 2 slots)
        script=Script(...),             # how it answers JobStart (default: honest)
        beat=Beat(...),                 # what its heartbeats claim (default: honest, idle)
    )
    await node.connect()                # handshake, signed manifest, heartbeats, reader
    await node.wait_closed()            # until the tracker drops it; node.error = its Error
    await node.close()                  # always (tests stop what they start)

    node.peer_id, node.identity         # who it is (real keys)
    node.jobs / node.embeds             # JobStart / EmbedStart messages it received
    node.cancels / node.credits         # job ids it was told to cancel / JobCredit messages
    node.error                          # the Error frame the tracker sent before closing
    await node.send(msg)                # any wire message, through the real codec (which
                                        # does not validate: NaN, negatives, lies all go out)
    await node.send_raw(frame)          # raw bytes: garbage, oversized, hand-built msgpack
    await node.flood(msg, count)        # ``count`` copies of ``msg`` as fast as possible
    node.manifest(name=..., models=...) # a signed Manifest with any (lying) content
    node.receipt(job_id, model, usage)  # a real signed receipt claiming ``usage``

:class:`Script` (per node; change it between requests) decides what a job gets:
``tokens`` streamed one chunk each, then a JobEnd. Lies: ``stall`` (accept, never
send a first token), ``stop_after`` (go silent after N chunks), ``chunk_tokens``
(tokens claimed per chunk), ``skip_seq`` (a gap in sequence numbers),
``tool_calls`` (sent with the first chunk), ``usage`` (the JobEnd's claim, e.g.
absurd), ``receipt_usage`` (what the signed receipt claims), ``error`` (answer
JobError(code, message) instead), and for EmbedStart ``vectors`` / ``embed_usage``.
:class:`Beat` sets the heartbeat fields (``free_slots``, ``queue_depth``,
``tokens_per_s``), sent every ``Welcome.heartbeat_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from websockets.asyncio.client import ClientConnection, connect

from lichen.identity.signing import sign
from lichen.identity.store import KEYS_DIR, Identity, load_identity
from lichen.ledger.receipts import ReceiptSigner
from lichen.transport.handshake import client_handshake
from lichen.transport.link import ClientLink
from lichen.wire import codec
from lichen.wire.messages import (
    EmbedResult,
    EmbedStart,
    Error,
    Hardware,
    Heartbeat,
    JobCancel,
    JobChunk,
    JobCredit,
    JobEnd,
    JobError,
    JobStart,
    Manifest,
    ManifestBody,
    Message,
    ModelInfo,
    Usage,
)
from lichen.wire.vectors import pack_vector

MODEL = "fake-model"


@dataclass
class Script:
    """How the node answers jobs (see the module docstring)."""

    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "."])
    stall: bool = False  # never send anything for a job
    stop_after: int | None = None  # send this many chunks, then nothing more
    chunk_tokens: int = 1  # tokens each chunk claims
    skip_seq: int | None = None  # the chunk at this index gets seq + 1 (a gap)
    tool_calls: str = ""  # tool_calls text of the first chunk
    usage: Usage | None = None  # the JobEnd's usage (None: honest counts)
    receipt_usage: Usage | None = None  # what the signed receipt claims (None: as usage)
    error: tuple[str, str] | None = None  # answer JobError(code, message) instead
    delay_s: float = 0.0  # between chunks
    ignore_window: bool = False  # send chunks without waiting for JobCredit
    vectors: list[bytes] | None = None  # EmbedResult vectors (None: one honest 4-d per input)
    embed_usage: Usage | None = None  # EmbedResult usage (None: 1 token per input)


@dataclass
class Beat:
    """What the node's heartbeats claim."""

    free_slots: int = 2
    queue_depth: int = 0
    tokens_per_s: float = 50.0
    draining: bool = False


class HostileNode:
    """A node on the real wire that does whatever its :class:`Script` and :class:`Beat` say."""

    def __init__(
        self,
        node_dir: Path,
        *,
        owner_dir: Path,
        url: str,
        network_public: bytes | None,
        name: str = "hostile",
        models: list[ModelInfo] | None = None,
        script: Script | None = None,
        beat: Beat | None = None,
    ) -> None:
        (node_dir / KEYS_DIR).mkdir(parents=True, mode=0o700, exist_ok=True)
        shutil.copy2(owner_dir / KEYS_DIR / "account.key", node_dir / KEYS_DIR / "account.key")
        self.identity: Identity = load_identity(node_dir, node_name="hostile")
        self.url = url
        self.network_public = network_public
        self.name = name
        self.models = models if models is not None else [model_info()]
        self.script = script or Script()
        self.beat = beat or Beat()
        self.jobs: list[JobStart] = []
        self.embeds: list[EmbedStart] = []
        self.cancels: list[str] = []
        self.credits: list[JobCredit] = []
        self.error: Error | None = None
        self.signer = ReceiptSigner(self.identity.device_key, self.identity.device_certificate)
        self._ws: ClientConnection | None = None
        self._link: ClientLink | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = asyncio.Event()
        self._windows: dict[str, asyncio.Semaphore] = {}

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    # --- connection ---------------------------------------------------------------------

    async def connect(self, *, manifest: Manifest | None = None) -> None:
        """Handshake, send ``manifest`` (default: one for :attr:`name` and :attr:`models`),
        then heartbeat and answer jobs in the background until the link closes."""
        self._ws = await connect(self.url, compression=None, max_size=None, proxy=None)
        self._link = ClientLink(self._ws, max_frame=1 << 30)  # it may send what it likes
        welcome, _key = await client_handshake(
            self._link,
            device_key=self.identity.device_key,
            device_certificate=self.identity.device_certificate,
            expected_network_key=self.network_public,
        )
        self.signer.session = welcome.session_id
        await self.send(manifest or self.manifest())
        self._tasks = [
            asyncio.create_task(self._read(), name=f"hostile-read-{self.name[:16]}"),
            asyncio.create_task(self._beats(welcome.heartbeat_s), name="hostile-beat"),
        ]

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until the tracker closed the link (fail the test after ``timeout``)."""
        await asyncio.wait_for(self._closed.wait(), timeout)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        self._closed.set()

    # --- sending ------------------------------------------------------------------------

    async def send(self, msg: Message) -> None:
        """Send through the real codec (encoding never validates, so lies go out)."""
        assert self._link is not None, "connect() first"
        await self._link.send(msg)

    async def send_raw(self, frame: bytes) -> None:
        assert self._ws is not None, "connect() first"
        await self._ws.send(frame)

    async def flood(self, msg: Message, count: int) -> int:
        """Send ``msg`` ``count`` times without pausing; returns how many went out."""
        frame = codec.encode(msg, max_bytes=1 << 30)
        sent = 0
        with contextlib.suppress(Exception):  # the tracker closed the link
            for _ in range(count):
                await self.send_raw(frame)
                sent += 1
        return sent

    def manifest(
        self,
        *,
        name: str | None = None,
        models: list[ModelInfo] | None = None,
        peer_id: str | None = None,
    ) -> Manifest:
        """A manifest with any content, signed with this node's real device key."""
        body = ManifestBody(
            name=self.name if name is None else name,
            peer_id=peer_id or self.peer_id,
            hardware=Hardware(cpu="hostile", cores=2, ram_mb=1024),
            models=self.models if models is None else models,
            engines=["fake"],
            issued_ms=int(time.time() * 1000),
        )
        raw = msgspec.msgpack.encode(body)
        return Manifest(body=raw, signature=sign(self.identity.device_key, raw))

    def receipt(self, job_id: str, model: str, usage: Usage, finish_reason: str = "stop") -> bytes:
        """A real, correctly signed receipt that claims ``usage`` (true or not)."""
        return self.signer.sign(
            job_id=job_id,
            model=model,
            usage=usage,
            finish_reason=finish_reason,
            issued_ms=int(time.time() * 1000),
        )

    # --- background ---------------------------------------------------------------------

    async def _beats(self, every_s: float) -> None:
        with contextlib.suppress(Exception):  # the link closed
            while True:
                b = self.beat
                await self.send(
                    Heartbeat(
                        free_slots=b.free_slots,
                        queue_depth=b.queue_depth,
                        tokens_per_s=b.tokens_per_s,
                        draining=b.draining,
                    )
                )
                await asyncio.sleep(every_s)

    async def _read(self) -> None:
        assert self._link is not None
        answering: set[asyncio.Task[None]] = set()
        try:
            while True:
                msg = await self._link.recv()
                if isinstance(msg, JobStart):
                    self.jobs.append(msg)
                    task = asyncio.create_task(self._answer(msg))
                    answering.add(task)
                    task.add_done_callback(answering.discard)
                elif isinstance(msg, EmbedStart):
                    self.embeds.append(msg)
                    await self._answer_embed(msg)
                elif isinstance(msg, JobCancel):
                    self.cancels.append(msg.job_id)
                elif isinstance(msg, JobCredit):
                    self.credits.append(msg)
                    window = self._windows.get(msg.job_id)
                    for _ in range(min(msg.n, 4096) if window is not None else 0):
                        window.release()  # type: ignore[union-attr]
                elif isinstance(msg, Error):
                    self.error = msg
        except Exception:  # LinkClosed, or a frame this side cannot decode
            pass
        finally:
            for task in answering:
                task.cancel()
            self._closed.set()

    async def _answer(self, start: JobStart) -> None:
        s = self.script
        job = start.job_id
        model = start.request.model
        if s.stall:
            return
        if s.error is not None:
            await self.send(JobError(job_id=job, code=s.error[0], message=s.error[1]))
            return
        sent = 0
        window = self._windows[job] = asyncio.Semaphore(start.window)
        for index, text in enumerate(s.tokens):
            if s.stop_after is not None and index >= s.stop_after:
                return  # silent from here on: never ends the job
            if not s.ignore_window:
                await window.acquire()
            seq = index + 1 if s.skip_seq is not None and index >= s.skip_seq else index
            await self.send(
                JobChunk(
                    job_id=job,
                    seq=seq,
                    text=text,
                    tokens=s.chunk_tokens,
                    tool_calls=s.tool_calls if index == 0 else "",
                )
            )
            sent += 1
            if s.delay_s:
                await asyncio.sleep(s.delay_s)
        usage = s.usage or Usage(5, sent)
        receipt = self.receipt(job, model, s.receipt_usage or usage)
        await self.send(JobEnd(job_id=job, finish_reason="stop", usage=usage, receipt=receipt))

    async def _answer_embed(self, start: EmbedStart) -> None:
        s = self.script
        if s.stall:
            return
        if s.error is not None:
            await self.send(JobError(job_id=start.job_id, code=s.error[0], message=s.error[1]))
            return
        count = len(start.request.inputs)
        vectors = s.vectors
        if vectors is None:
            vectors = [pack_vector([0.5, 0.25, 0.0, 1.0]) for _ in range(count)]
        usage = s.embed_usage or Usage(count, 0)
        receipt = self.receipt(start.job_id, start.request.model, s.receipt_usage or usage)
        await self.send(
            EmbedResult(job_id=start.job_id, vectors=vectors, usage=usage, receipt=receipt)
        )


def model_info(
    name: str = MODEL,
    *,
    slots: int = 2,
    context: int = 0,
    embeddings: bool = False,
    tools: bool = False,
) -> ModelInfo:
    """A manifest model entry (``embeddings=True`` for embedding tests, ``context=`` ...)."""
    return ModelInfo(
        name=name,
        sha256="0" * 64,
        engine="fake",
        context=context,
        slots=slots,
        tools=tools,
        embeddings=embeddings,
    )
