"""Every message on the node <-> tracker link, defined once for both sides.

Messages are ``msgspec.Struct`` classes tagged by a short name and encoded as
msgpack inside a versioned :class:`~lichen.wire.codec.Envelope`. Handlers
receive these typed objects, never raw dictionaries.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from lichen.identity.trust import TrustLevel

PROTOCOL_VERSION = 1

# --- decode-time bounds ---------------------------------------------------------------
# Every field a peer sends is bounded where it is decoded: a frame that breaks one of
# these is a PROTOCOL_ERROR (the link closes), never a value that reaches the scheduler,
# the API or the ledger. NaN and infinity fail every float bound (NaN compares false).

MAX_NAME = 128  # node names, model names, engine kinds, ids
MAX_MODELS = 64  # models in one manifest or telemetry report
MAX_COUNT = 2**31 - 1  # token counts, slots, sequence numbers
MAX_MESSAGE = 2048  # error messages a peer may show

Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
ModelName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_NAME, pattern=r"^[A-Za-z0-9][\w.:/@+-]*$")
]
NodeName = Annotated[str, msgspec.Meta(max_length=MAX_NAME, pattern=r"^[^\x00-\x1f\x7f]*$")]
Text = Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
Slots = Annotated[int, msgspec.Meta(ge=0, le=4096)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=2**53)]  # epoch milliseconds
Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1e7)]  # finite, non-negative
Blob = Annotated[bytes, msgspec.Meta(max_length=16 * 1024)]  # keys, nonces, certificates
Reason = Annotated[str, msgspec.Meta(max_length=32, pattern=r"^[a-z_]*$")]
# One streamed delta: a token or a few, so this bounds what a window of chunks can
# make the tracker hold for one job (64 chunks x 64 Ki characters).
DeltaText = Annotated[str, msgspec.Meta(max_length=64 * 1024)]
Seed = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Temperature = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, msgspec.Meta(ge=-100.0, le=100.0)]


class _Msg(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="t"):
    """Base for wire messages (tag field ``t``)."""


# --- request payloads ---------------------------------------------------------------


class ChatMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    role: Name  # "system" | "user" | "assistant" | "tool"
    content: str  # text content; multi-part content is flattened by the gateway
    name: Name | None = None  # optional participant name
    tool_calls: str | None = None  # assistant: the OpenAI tool_calls it made, as JSON text
    tool_call_id: Name | None = None  # tool: which tool call this message answers


class SamplingParams(msgspec.Struct, frozen=True, omit_defaults=True):
    max_tokens: Count | None = None  # generation cap; None lets the engine decide
    temperature: Temperature | None = None  # 0 means greedy
    top_p: Probability | None = None  # nucleus sampling mass
    stop: Annotated[list[str], msgspec.Meta(max_length=64)] = []  # stop sequences (not output)
    seed: Seed | None = None  # sampling seed for reproducible output
    response_format: str | None = None  # OpenAI response_format as JSON text
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    tools: str | None = None  # OpenAI tools array as JSON text (engines with tools=True only)
    tool_choice: str | None = None  # OpenAI tool_choice as JSON text
    logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None  # token log probabilities:
    # None: none; 0: each chosen token's; N: also the N most likely alternatives


class GenerationRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    kind: Literal["chat", "completion"]  # which OpenAI endpoint shape
    model: ModelName  # catalog name the node serves
    messages: list[ChatMessage] = []  # chat: the conversation
    prompt: str = ""  # completion: the raw prompt
    params: SamplingParams = SamplingParams()
    continuation: str = ""  # text already sent to the client; the engine continues after it
    privacy_class: Name = ""  # the policy's privacy class; only nodes whose trust fits serve it


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: Count  # tokens of the prompt as the engine counted them
    completion_tokens: Count  # tokens generated for the client
    reported: bool = True  # False: the engine gave no counts, so both are 0, never a guess
    cached_tokens: Count = 0  # of prompt_tokens, reused from the engine's prompt (KV) cache


class EmbeddingRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    model: ModelName  # catalog name of an embedding-capable model the node serves
    inputs: list[str]  # texts to embed, one vector each, in order
    dimensions: Annotated[int, msgspec.Meta(ge=1, le=65536)] | None = None  # truncate vectors


class ModelInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    name: ModelName  # catalog name, e.g. "smollm2-135m"
    sha256: Name  # hex digest of the weights file ("" for upstream engines)
    engine: Name  # "llamacpp" | "openai"
    context: Count = 0  # context tokens per slot
    slots: Slots = 1  # parallel requests this model serves
    tools: bool = False  # accepts OpenAI tools/tool_choice and can answer with tool calls
    embeddings: bool = False  # can answer EmbedStart with vectors
    # How tools are served when ``tools``: "native" (the chat template's own format) or
    # "generic" (JSON-schema-constrained calls for templates without one); "" unknown.
    tool_format: Name = ""


class Hardware(msgspec.Struct, frozen=True, omit_defaults=True):
    cpu: Annotated[str, msgspec.Meta(max_length=256)] = ""  # CPU model string
    cores: Slots = 0  # logical cores
    ram_mb: Count = 0  # total memory
    gpu: Annotated[str, msgspec.Meta(max_length=256)] = ""  # GPU name, "" when none


# --- handshake ------------------------------------------------------------------------


class Hello(_Msg, tag="hello", frozen=True):
    """node -> tracker, first frame: who I am and a nonce the tracker must sign."""

    peer_id: Name  # derived from the device public key
    device_cert: Blob  # DeviceCertificate, signed by the account key
    node_nonce: Blob  # 32 random bytes for the tracker to sign with the network key
    invite: Text = ""  # invite token, presented on first join
    software: Name = ""  # "lichen/0.1.0"


class Challenge(_Msg, tag="challenge", frozen=True):
    """tracker -> node: proof of the network key plus a nonce for the node to sign."""

    network_key: Blob  # raw Ed25519 public key of the network
    network_sig: Blob  # signature over node_nonce || tracker_nonce
    tracker_nonce: Blob  # 32 random bytes


class Auth(_Msg, tag="auth", frozen=True):
    """node -> tracker: the node's signature over tracker_nonce || timestamp."""

    timestamp_ms: Millis  # node clock at signing time; must be recent
    signature: Blob  # device-key signature


class Welcome(_Msg, tag="welcome", frozen=True):
    """tracker -> node: the link is authenticated."""

    session_id: Name  # opaque id for logs
    heartbeat_s: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)]  # how often to heartbeat
    policy: bytes = b""  # signed network policy document (TOML), if any


# --- node state -----------------------------------------------------------------------


class Manifest(_Msg, tag="manifest", frozen=True):
    """node -> tracker: signed description of the node."""

    body: bytes  # msgpack-encoded ManifestBody
    signature: bytes  # device-key signature over body


class ManifestBody(msgspec.Struct, frozen=True, omit_defaults=True):
    name: NodeName  # human-readable node name
    peer_id: Name  # must match the authenticated peer
    hardware: Hardware
    models: Annotated[list[ModelInfo], msgspec.Meta(max_length=MAX_MODELS)]
    engines: Annotated[list[Name], msgspec.Meta(max_length=16)] = []  # engine kinds present
    issued_ms: Millis = 0  # when the manifest was signed
    trust: Name = TrustLevel.COMMUNITY.value  # trust level the node claims


class Heartbeat(_Msg, tag="hb", frozen=True):
    """node -> tracker, every heartbeat_s."""

    free_slots: Count  # slots idle right now (the tracker clamps it to the manifest's slots)
    queue_depth: Count  # jobs waiting for a slot (clamped too)
    tokens_per_s: Rate  # recent decode speed; finite
    draining: bool = False  # True while the node finishes its jobs before exit


# --- jobs -----------------------------------------------------------------------------


class JobStart(_Msg, tag="job", frozen=True):
    """tracker -> node: run this request."""

    job_id: Name
    request: GenerationRequest
    deadline_ms: Millis  # absolute wall-clock deadline
    window: Annotated[int, msgspec.Meta(ge=1, le=4096)]  # chunks before it needs JobCredit


class JobChunk(_Msg, tag="chunk", frozen=True):
    """node -> tracker: a piece of generated text."""

    job_id: Name
    seq: Count  # 0, 1, 2, ... per job
    text: DeltaText  # text delta (may be empty)
    tokens: Count = 1  # tokens this delta represents
    tool_calls: DeltaText = ""  # OpenAI delta tool_calls array as JSON text, "" when none
    logprobs: str = ""  # OpenAI logprobs.content entries of this delta as JSON text, "" when none


class JobCredit(_Msg, tag="credit", frozen=True):
    """tracker -> node: the consumer has taken ``n`` more chunks."""

    job_id: Name
    n: Count


class JobEnd(_Msg, tag="end", frozen=True):
    """node -> tracker: the job finished."""

    job_id: Name
    finish_reason: Reason  # "stop" | "length" | "cancelled"
    usage: Usage
    receipt: Blob = b""  # node-signed receipt (ledger)


class JobCancel(_Msg, tag="cancel", frozen=True):
    """tracker -> node: stop this job (client went away, deadline)."""

    job_id: Name
    reason: Text = ""


class JobError(_Msg, tag="joberr", frozen=True):
    """node -> tracker: the job failed before or while generating."""

    job_id: Name
    code: Name  # an ErrorCode value
    message: Text  # safe to show; never prompt text


class Probe(_Msg, tag="probe", frozen=True):
    """tracker -> node: a spot check (handled as a normal greedy job)."""

    job_id: Name
    request: GenerationRequest


class EmbedStart(_Msg, tag="embed", frozen=True):
    """tracker -> node: compute embeddings; answered by EmbedResult or JobError."""

    job_id: Name
    request: EmbeddingRequest
    deadline_ms: Millis  # absolute wall-clock deadline


class EmbedResult(_Msg, tag="vectors", frozen=True):
    """node -> tracker: the embeddings for an EmbedStart, in input order."""

    job_id: Name
    vectors: list[bytes]  # one vector per input: little-endian float32 values
    usage: Usage  # prompt_tokens counts the inputs; completion_tokens is 0
    receipt: Blob = b""  # node-signed receipt for the embedding job (ledger)


class Telemetry(_Msg, tag="telemetry", frozen=True):
    """node -> tracker, only when the node opted in: counters, never content or addresses.

    A node sends only the counters the network policy lists; the others stay unset.
    """

    requests: Count | None = None  # jobs finished since the node started
    tokens: Annotated[int, msgspec.Meta(ge=0, le=2**53)] | None = None  # tokens generated
    tokens_per_s: Rate | None = None  # recent decode speed
    models: Annotated[list[ModelName], msgspec.Meta(max_length=MAX_MODELS)] | None = None
    uptime_s: Annotated[int, msgspec.Meta(ge=0, le=2**53)] | None = None  # seconds running


class Error(_Msg, tag="error", frozen=True):
    """Either direction: a link-level error; the sender closes afterwards."""

    code: Name  # an ErrorCode value
    message: Text


# --- model transfer (the /v1/models/link transfer link; see lichen.models.swarm) ------------


Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
ChunkIndex = Annotated[int, msgspec.Meta(ge=0, lt=1 << 16)]  # lichen.models.chunks.MAX_CHUNKS
ChunkBytes = Annotated[bytes, msgspec.Meta(max_length=4 << 20)]  # 4x the 1 MiB chunk size
Bitmap = Annotated[bytes, msgspec.Meta(max_length=(1 << 16) // 8)]
PeerRef = Annotated[str, msgspec.Meta(max_length=MAX_NAME, pattern=r"^[a-z0-9-]*$")]


class HeldModel(msgspec.Struct, frozen=True):
    sha256: Sha256Hex  # SHA-256 of the whole model file
    have: Bitmap  # bitmap, bit i (LSB first) set: chunk i is held and verified


class SwarmHave(_Msg, tag="swarm_have", frozen=True):
    """node -> tracker: the model chunks this node holds and can serve to peers."""

    models: Annotated[list[HeldModel], msgspec.Meta(max_length=256)]  # replaces the last one
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0  # direct chunk port; 0: relay only


class ChunkListGet(_Msg, tag="chunklist_get", frozen=True):
    """node -> tracker: the signed chunk list of a catalog model (may start a pull-through)."""

    req_id: Count  # answered by ChunkListData or ChunkFail with the same id
    name: ModelName  # catalog name
    known: ChunkIndex = 0  # chunks the node already knows: wait (briefly) until there are more


class ChunkListData(_Msg, tag="chunklist", frozen=True):
    """tracker -> node: a signed chunk list (lichen.models.catalog_sign.SignedChunkList)."""

    req_id: Count
    signed: Annotated[bytes, msgspec.Meta(max_length=3 << 20)]  # msgpack SignedChunkList


class ChunkGet(_Msg, tag="chunk_get", frozen=True):
    """node -> tracker (fetch), or tracker -> holder (relay): one chunk, by content."""

    req_id: Count  # answered by ChunkData or ChunkFail with the same id
    model: Sha256Hex  # SHA-256 of the whole file the chunk belongs to
    index: ChunkIndex  # chunk number in that file
    sha256: Sha256Hex  # the chunk's own SHA-256 (what the answer must hash to)
    direct: bool = False  # node -> tracker: a ChunkAt (fetch it from a peer yourself) is fine


class ChunkAt(_Msg, tag="chunk_at", frozen=True):
    """tracker -> node: fetch this chunk directly from a peer that accepts connections."""

    req_id: Count
    url: Annotated[str, msgspec.Meta(max_length=512, pattern=r"^https?://[^\s]+$")]
    holder: PeerRef  # the peer's id (named in ChunkBad if its bytes are wrong)


class ChunkData(_Msg, tag="chunk_data", frozen=True):
    """The bytes of one chunk, answering a ChunkGet."""

    req_id: Count
    data: ChunkBytes  # the chunk (the receiver checks its hash and length)
    holder: PeerRef = ""  # tracker -> node: the peer id that served it ("" = the tracker)


class ChunkFail(_Msg, tag="chunk_fail", frozen=True):
    """A ChunkGet or ChunkListGet that cannot be answered (try again or elsewhere)."""

    req_id: Count
    code: Reason  # an ErrorCode value
    message: Text  # safe to show


class ChunkBad(_Msg, tag="chunk_bad", frozen=True):
    """node -> tracker: a chunk that holder served failed verification here."""

    model: Sha256Hex  # SHA-256 of the whole file
    index: ChunkIndex  # chunk number
    holder: PeerRef  # peer id from ChunkData.holder ("" = the tracker itself)


Message = (
    Hello
    | Challenge
    | Auth
    | Welcome
    | Manifest
    | Heartbeat
    | JobStart
    | JobChunk
    | JobCredit
    | JobEnd
    | JobCancel
    | JobError
    | Probe
    | EmbedStart
    | EmbedResult
    | Telemetry
    | Error
    | SwarmHave
    | ChunkListGet
    | ChunkListData
    | ChunkGet
    | ChunkData
    | ChunkAt
    | ChunkFail
    | ChunkBad
)
