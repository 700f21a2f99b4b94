"""Every message on the node <-> tracker link, defined once for both sides.

Messages are ``msgspec.Struct`` classes tagged by a short name and encoded as
msgpack inside a versioned :class:`~lichen.wire.codec.Envelope`. Handlers
receive these typed objects, never raw dictionaries.
"""

from __future__ import annotations

from typing import Literal

import msgspec

PROTOCOL_VERSION = 1


class _Msg(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="t"):
    """Base for wire messages (tag field ``t``)."""


# --- request payloads ---------------------------------------------------------------


class ChatMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    role: str  # "system" | "user" | "assistant" | "tool"
    content: str  # text content; multi-part content is flattened by the gateway
    name: str | None = None  # optional participant name
    tool_calls: str | None = None  # assistant: the OpenAI tool_calls it made, as JSON text
    tool_call_id: str | None = None  # tool: which tool call this message answers


class SamplingParams(msgspec.Struct, frozen=True, omit_defaults=True):
    max_tokens: int | None = None  # generation cap; None lets the engine decide
    temperature: float | None = None  # 0 means greedy
    top_p: float | None = None  # nucleus sampling mass
    stop: list[str] = []  # stop sequences (not included in the output)
    seed: int | None = None  # sampling seed for reproducible output
    response_format: str | None = None  # OpenAI response_format as JSON text
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    tools: str | None = None  # OpenAI tools array as JSON text (engines with tools=True only)
    tool_choice: str | None = None  # OpenAI tool_choice as JSON text


class GenerationRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    kind: Literal["chat", "completion"]  # which OpenAI endpoint shape
    model: str  # catalog name the node serves
    messages: list[ChatMessage] = []  # chat: the conversation
    prompt: str = ""  # completion: the raw prompt
    params: SamplingParams = SamplingParams()
    continuation: str = ""  # text already sent to the client; the engine continues after it
    privacy_class: str = ""  # the policy's privacy class; only nodes whose trust fits serve it


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int  # tokens of the prompt as the engine counted them
    completion_tokens: int  # tokens generated for the client
    reported: bool = True  # False: the engine gave no counts, so both are 0, never a guess


class EmbeddingRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    model: str  # catalog name of an embedding-capable model the node serves
    inputs: list[str]  # texts to embed, one vector each, in order
    dimensions: int | None = None  # truncate vectors to this many dimensions (if supported)


class ModelInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str  # catalog name, e.g. "smollm2-135m"
    sha256: str  # hex digest of the weights file ("" for upstream engines)
    engine: str  # "llamacpp" | "openai"
    context: int = 0  # context tokens per slot
    slots: int = 1  # parallel requests this model serves
    tools: bool = False  # accepts OpenAI tools/tool_choice and can answer with tool calls
    embeddings: bool = False  # can answer EmbedStart with vectors


class Hardware(msgspec.Struct, frozen=True, omit_defaults=True):
    cpu: str = ""  # CPU model string
    cores: int = 0  # logical cores
    ram_mb: int = 0  # total memory
    gpu: str = ""  # GPU name, "" when none


# --- handshake ------------------------------------------------------------------------


class Hello(_Msg, tag="hello", frozen=True):
    """node -> tracker, first frame: who I am and a nonce the tracker must sign."""

    peer_id: str  # derived from the device public key
    device_cert: bytes  # DeviceCertificate, signed by the account key
    node_nonce: bytes  # 32 random bytes for the tracker to sign with the network key
    invite: str = ""  # invite token, presented on first join
    software: str = ""  # "lichen/0.1.0"


class Challenge(_Msg, tag="challenge", frozen=True):
    """tracker -> node: proof of the network key plus a nonce for the node to sign."""

    network_key: bytes  # raw Ed25519 public key of the network
    network_sig: bytes  # signature over node_nonce || tracker_nonce
    tracker_nonce: bytes  # 32 random bytes


class Auth(_Msg, tag="auth", frozen=True):
    """node -> tracker: the node's signature over tracker_nonce || timestamp."""

    timestamp_ms: int  # node clock at signing time; must be recent
    signature: bytes  # device-key signature


class Welcome(_Msg, tag="welcome", frozen=True):
    """tracker -> node: the link is authenticated."""

    session_id: str  # opaque id for logs
    heartbeat_s: float  # how often the node must send a heartbeat
    policy: bytes = b""  # signed network policy document (TOML), if any


# --- node state -----------------------------------------------------------------------


class Manifest(_Msg, tag="manifest", frozen=True):
    """node -> tracker: signed description of the node."""

    body: bytes  # msgpack-encoded ManifestBody
    signature: bytes  # device-key signature over body


class ManifestBody(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str  # human-readable node name
    peer_id: str  # must match the authenticated peer
    hardware: Hardware
    models: list[ModelInfo]
    engines: list[str] = []  # engine kinds present on the node
    issued_ms: int = 0  # when the manifest was signed
    trust: str = "community"  # trust level the node claims


class Heartbeat(_Msg, tag="hb", frozen=True):
    """node -> tracker, every heartbeat_s."""

    free_slots: int  # slots idle right now
    queue_depth: int  # jobs waiting for a slot
    tokens_per_s: float  # recent decode speed
    draining: bool = False  # True while the node finishes its jobs before exit


# --- jobs -----------------------------------------------------------------------------


class JobStart(_Msg, tag="job", frozen=True):
    """tracker -> node: run this request."""

    job_id: str
    request: GenerationRequest
    deadline_ms: int  # absolute wall-clock deadline
    window: int  # chunks the node may send before it needs JobCredit


class JobChunk(_Msg, tag="chunk", frozen=True):
    """node -> tracker: a piece of generated text."""

    job_id: str
    seq: int  # 0, 1, 2, ... per job
    text: str  # text delta (may be empty)
    tokens: int = 1  # tokens this delta represents
    tool_calls: str = ""  # OpenAI delta tool_calls array as JSON text, "" when none


class JobCredit(_Msg, tag="credit", frozen=True):
    """tracker -> node: the consumer has taken ``n`` more chunks."""

    job_id: str
    n: int


class JobEnd(_Msg, tag="end", frozen=True):
    """node -> tracker: the job finished."""

    job_id: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    usage: Usage
    receipt: bytes = b""  # node-signed receipt (ledger)


class JobCancel(_Msg, tag="cancel", frozen=True):
    """tracker -> node: stop this job (client went away, deadline)."""

    job_id: str
    reason: str = ""


class JobError(_Msg, tag="joberr", frozen=True):
    """node -> tracker: the job failed before or while generating."""

    job_id: str
    code: str  # an ErrorCode value
    message: str  # safe to show; never prompt text


class Probe(_Msg, tag="probe", frozen=True):
    """tracker -> node: a spot check (handled as a normal greedy job)."""

    job_id: str
    request: GenerationRequest


class EmbedStart(_Msg, tag="embed", frozen=True):
    """tracker -> node: compute embeddings; answered by EmbedResult or JobError."""

    job_id: str
    request: EmbeddingRequest
    deadline_ms: int  # absolute wall-clock deadline


class EmbedResult(_Msg, tag="vectors", frozen=True):
    """node -> tracker: the embeddings for an EmbedStart, in input order."""

    job_id: str
    vectors: list[bytes]  # one vector per input: little-endian float32 values
    usage: Usage  # prompt_tokens counts the inputs; completion_tokens is 0


class Telemetry(_Msg, tag="telemetry", frozen=True):
    """node -> tracker, only when the node opted in: counters, never content or addresses.

    A node sends only the counters the network policy lists; the others stay unset.
    """

    requests: int | None = None  # jobs finished since the node started
    tokens: int | None = None  # tokens generated since the node started
    tokens_per_s: float | None = None  # recent decode speed
    models: list[str] | None = None  # names of the models the node serves
    uptime_s: int | None = None  # seconds since the node started


class Error(_Msg, tag="error", frozen=True):
    """Either direction: a link-level error; the sender closes afterwards."""

    code: str  # an ErrorCode value
    message: str


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
)
