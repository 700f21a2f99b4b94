"""The wire codec: every message round-trips; anything malformed is a typed error."""

from __future__ import annotations

import msgspec
import pytest

from lichen.errors import ErrorCode, LichenError
from lichen.wire import codec
from lichen.wire.messages import (
    PROTOCOL_VERSION,
    Auth,
    Challenge,
    ChatMessage,
    ChunkAt,
    ChunkBad,
    ChunkData,
    ChunkFail,
    ChunkGet,
    ChunkListData,
    ChunkListGet,
    EmbeddingRequest,
    EmbedResult,
    EmbedStart,
    Error,
    GenerationRequest,
    Heartbeat,
    HeldModel,
    Hello,
    JobCancel,
    JobChunk,
    JobCredit,
    JobEnd,
    JobError,
    JobStart,
    Manifest,
    Message,
    Probe,
    SamplingParams,
    SwarmHave,
    Telemetry,
    Usage,
    Welcome,
)

CHAT = GenerationRequest(
    kind="chat",
    model="smollm2-135m",
    messages=[
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Say hi \u00e9\u6f22\U0001f600", name="ann"),
    ],
    params=SamplingParams(
        max_tokens=64,
        temperature=0.0,
        top_p=0.9,
        stop=["\n\n", "END"],
        seed=7,
        response_format='{"type": "json_object"}',
        presence_penalty=0.5,
        frequency_penalty=-0.5,
    ),
    continuation="Hi",
)
COMPLETION = GenerationRequest(kind="completion", model="m", prompt="Once upon a time")

EVERY_MESSAGE: list[Message] = [
    Hello(
        peer_id="peer-1",
        device_cert=b"\x00cert\xff",
        node_nonce=bytes(range(32)),
        invite="invite-token",
        software="lichen/0.1.0",
    ),
    Hello(peer_id="peer-1", device_cert=b"c", node_nonce=b"n"),  # defaults omitted
    Challenge(network_key=b"k" * 32, network_sig=b"s" * 64, tracker_nonce=b"t" * 32),
    Auth(timestamp_ms=1_700_000_000_000, signature=b"s" * 64),
    Welcome(session_id="abc", heartbeat_s=1.5, policy=b"[policy]\nname = 'private'\n"),
    Manifest(body=b"\x81\xa4name\xa1n", signature=b"s" * 64),
    Heartbeat(free_slots=3, queue_depth=1, tokens_per_s=97.5, draining=True),
    JobStart(job_id="j1", request=CHAT, deadline_ms=1_700_000_300_000, window=64),
    JobStart(job_id="j2", request=COMPLETION, deadline_ms=0, window=1),
    JobChunk(job_id="j1", seq=0, text=""),
    JobChunk(job_id="j1", seq=41, text=" world\u2026", tokens=2),
    JobCredit(job_id="j1", n=32),
    JobEnd(job_id="j1", finish_reason="length", usage=Usage(12, 64), receipt=b"r"),
    JobCancel(job_id="j1", reason="client"),
    JobError(job_id="j1", code=ErrorCode.NODE_FAILED.value, message="engine died"),
    Probe(job_id="p1", request=COMPLETION),
    Error(code=ErrorCode.HANDSHAKE_FAILED.value, message="bad signature"),
    EmbedStart(
        job_id="e1",
        request=EmbeddingRequest(model="m", inputs=["a", "b\u00e9"], dimensions=8),
        deadline_ms=1,
    ),
    EmbedResult(job_id="e1", vectors=[b"\x00\x00\x80?", b""], usage=Usage(3, 0)),
    Telemetry(requests=3, tokens=42, tokens_per_s=40.5, models=["smollm2-135m"], uptime_s=60),
    Telemetry(requests=1),  # a policy may allow only some counters
    JobChunk(job_id="j1", seq=1, text="", tool_calls='[{"index": 0, "id": "c1"}]'),
    JobEnd(job_id="j2", finish_reason="stop", usage=Usage(0, 0, reported=False)),
    # model transfer (lichen.models.swarm)
    SwarmHave(models=[HeldModel(sha256="a" * 64, have=b"\xff\x01")]),
    ChunkListGet(req_id=1, name="smollm2-135m"),
    ChunkListData(req_id=1, signed=b"signed"),
    ChunkGet(req_id=2, model="a" * 64, index=3, sha256="b" * 64),
    ChunkData(req_id=2, data=b"\x00" * 16, holder="lp-x"),
    ChunkAt(req_id=3, url="http://10.0.0.2:8471/v1/chunks/x", holder="lp-x"),
    ChunkFail(req_id=2, code=ErrorCode.NOT_FOUND.value, message="no holder"),
    ChunkBad(model="a" * 64, index=3, holder=""),
]


def _frame(payload: object) -> bytes:
    return msgspec.msgpack.encode(payload)


def _valid_body() -> dict[str, object]:
    return {"t": "credit", "job_id": "j1", "n": 4}


def _expect(code: ErrorCode, frame: bytes, *, max_bytes: int = codec.MAX_FRAME_BYTES) -> None:
    with pytest.raises(LichenError) as info:
        codec.decode(frame, max_bytes=max_bytes)
    assert info.value.code is code, info.value


def test_every_message_type_is_covered() -> None:
    covered = {type(msg) for msg in EVERY_MESSAGE}
    assert covered == set(Message.__args__)


@pytest.mark.parametrize("msg", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    frame = codec.encode(msg)
    assert isinstance(frame, bytes)
    decoded = codec.decode(frame)
    assert type(decoded) is type(msg)
    assert decoded == msg


def test_envelope_carries_the_version_and_a_type_tag() -> None:
    raw = msgspec.msgpack.decode(codec.encode(JobCredit(job_id="j", n=1)))
    assert raw == [PROTOCOL_VERSION, {"t": "credit", "job_id": "j", "n": 1}]


def test_tags_are_unique() -> None:
    tags = [cls.__struct_config__.tag for cls in Message.__args__]
    assert len(tags) == len(set(tags))


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",  # a byte msgpack never uses
        b"\xff\xfe\xfd garbage \x00\x01",
        b"\x92\x01",  # array of 2 with one element: truncated
        b"GET / HTTP/1.1\r\n\r\n",
        _frame(None),
        _frame(42),
        _frame("text"),
        _frame([]),
        _frame([PROTOCOL_VERSION]),
        _frame({"v": PROTOCOL_VERSION, "msg": _valid_body()}),  # a map, not the array envelope
    ],
    ids=lambda f: repr(f[:12]),
)
def test_garbage_is_a_protocol_error(frame: bytes) -> None:
    _expect(ErrorCode.PROTOCOL_ERROR, frame)


@pytest.mark.parametrize(
    "body",
    [
        {"t": "credit", "job_id": "j1", "n": "four"},  # wrong type
        {"t": "credit", "job_id": 7, "n": 4},  # wrong type
        {"t": "credit", "job_id": "j1"},  # missing field
        {"t": "chunk", "job_id": "j1", "seq": 0, "text": b"bytes, not str"},
        {
            "t": "job",
            "job_id": "j",
            "request": {"kind": "shell", "model": "m"},
            "deadline_ms": 0,
            "window": 1,
        },  # kind is not chat|completion
        {"t": "end", "job_id": "j", "finish_reason": "stop", "usage": [1]},  # short usage
        {"t": "nonexistent", "job_id": "j1"},  # unknown tag
        {"job_id": "j1", "n": 4},  # no tag at all
        {"t": 3},
        ["credit", "j1", 4],
    ],
    ids=lambda b: str(b)[:40],
)
def test_wrong_shapes_are_a_protocol_error(body: object) -> None:
    _expect(ErrorCode.PROTOCOL_ERROR, _frame([PROTOCOL_VERSION, body]))


def test_protocol_error_messages_never_echo_the_payload() -> None:
    secret = "prompt text that must stay private"
    frame = _frame([PROTOCOL_VERSION, {"t": "chunk", "job_id": "j", "seq": secret, "text": "x"}])
    with pytest.raises(LichenError) as info:
        codec.decode(frame)
    assert info.value.code is ErrorCode.PROTOCOL_ERROR
    assert secret not in info.value.message


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, 999])
def test_other_versions_are_refused(version: int) -> None:
    _expect(ErrorCode.UNSUPPORTED_VERSION, _frame([version, _valid_body()]))


def test_a_future_version_with_unknown_messages_is_a_version_error() -> None:
    # A newer peer may send messages this side has never heard of: the version,
    # not the unknown tag, is the useful diagnosis.
    frame = _frame([PROTOCOL_VERSION + 1, {"t": "hologram", "x": [1, 2, 3]}])
    _expect(ErrorCode.UNSUPPORTED_VERSION, frame)


def test_version_of_the_wrong_type_is_a_protocol_error() -> None:
    _expect(ErrorCode.PROTOCOL_ERROR, _frame(["1", _valid_body()]))


def test_oversized_frames_are_refused_on_encode() -> None:
    msg = JobChunk(job_id="j", seq=0, text="x" * 2000)
    assert len(codec.encode(msg)) > 2000
    with pytest.raises(LichenError) as info:
        codec.encode(msg, max_bytes=1024)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_default_cap_applies_on_encode() -> None:
    msg = JobChunk(job_id="j", seq=0, text="x" * codec.MAX_FRAME_BYTES)
    with pytest.raises(LichenError) as info:
        codec.encode(msg)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_oversized_frames_are_refused_on_decode_before_parsing() -> None:
    frame = codec.encode(JobChunk(job_id="j", seq=0, text="x" * 2000))
    assert codec.decode(frame, max_bytes=len(frame)) == JobChunk(job_id="j", seq=0, text="x" * 2000)
    _expect(ErrorCode.FRAME_TOO_LARGE, frame, max_bytes=len(frame) - 1)
    # Size is checked first: even garbage over the cap is reported as too large.
    _expect(ErrorCode.FRAME_TOO_LARGE, b"\xc1" * (codec.MAX_FRAME_BYTES + 1))


def test_frame_exactly_at_the_cap_is_accepted() -> None:
    msg = JobChunk(job_id="j", seq=0, text="y" * 500)
    frame = codec.encode(msg)
    assert codec.encode(msg, max_bytes=len(frame)) == frame
    assert codec.decode(frame, max_bytes=len(frame)) == msg
