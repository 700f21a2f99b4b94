"""Decode-time bounds and node-output checks: hostile values are refused, honest ones pass."""

from __future__ import annotations

import math

import msgspec
import pytest

from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import generate_key, public_raw
from lichen.tracker.output import (
    chunk_problem,
    node_error,
    tool_calls_problem,
    usage_problem,
    vectors_problem,
)
from lichen.wire import codec
from lichen.wire.manifest import sign_manifest, verify_manifest
from lichen.wire.messages import (
    MAX_MODELS,
    MAX_NAME,
    EmbeddingRequest,
    EmbedResult,
    GenerationRequest,
    Heartbeat,
    JobChunk,
    JobStart,
    ModelInfo,
    SamplingParams,
    Usage,
)
from lichen.wire.vectors import pack_vector


def _refused(msg: object) -> LichenError:
    with pytest.raises(LichenError) as info:
        codec.decode(msgspec.msgpack.encode([1, msg]))
    return info.value


@pytest.mark.parametrize(
    "body",
    [
        {"t": "hb", "free_slots": 1, "queue_depth": 0, "tokens_per_s": math.nan},
        {"t": "hb", "free_slots": 1, "queue_depth": 0, "tokens_per_s": -math.inf},
        {"t": "hb", "free_slots": 1, "queue_depth": -(10**9), "tokens_per_s": 1.0},
        {"t": "hb", "free_slots": 2**40, "queue_depth": 0, "tokens_per_s": 1.0},
        {"t": "chunk", "job_id": "j", "seq": 0, "text": "", "tokens": -1},
        {"t": "end", "job_id": "j", "finish_reason": "stop", "usage": [-1, 0, True]},
        {"t": "joberr", "job_id": "j", "code": "x", "message": "m" * 5000},
        {"t": "credit", "job_id": "j" * 500, "n": 1},
        {"t": "telemetry", "models": ["m"] * (MAX_MODELS + 1)},
        {"t": "welcome", "session_id": "s", "heartbeat_s": math.inf},
    ],
    ids=[
        "nan",
        "neg-inf",
        "neg-queue",
        "huge-slots",
        "neg-tokens",
        "neg-usage",
        "long-message",
        "long-id",
        "many-models",
        "inf-heartbeat",
    ],
)
def test_out_of_bounds_values_fail_decoding(body: dict[str, object]) -> None:
    assert _refused(body).code is ErrorCode.PROTOCOL_ERROR


def test_honest_heartbeats_still_decode() -> None:
    beat = Heartbeat(free_slots=8, queue_depth=3, tokens_per_s=97.5)
    assert codec.decode(codec.encode(beat)) == beat


def test_check_refuses_what_the_other_side_would_refuse() -> None:
    request = GenerationRequest(kind="chat", model="m", params=SamplingParams(seed=2**64))
    with pytest.raises(LichenError) as info:
        codec.check(JobStart(job_id="j", request=request, deadline_ms=0, window=8))
    assert info.value.code is ErrorCode.PROTOCOL_ERROR  # encoding it is impossible
    fine = GenerationRequest(kind="chat", model="m", params=SamplingParams(seed=2**63 - 1))
    codec.check(JobStart(job_id="j", request=fine, deadline_ms=0, window=8))


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ('[{"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}}]', True),
        ('[{"index": 1, "function": {"arguments": "{\\"a\\": 1}"}}]', True),
        ("[]", True),
        ("{not json", False),
        ("[1, 2]", False),
        ('{"index": 0}', False),
        ('[{"index": -1}]', False),
        ('[{"index": true}]', False),
        ('[{"index": 100000}]', False),
        ('[{"id": 5}]', False),
        ('[{"function": "f"}]', False),
        ('[{"function": {"name": 1}}]', False),
    ],
)
def test_tool_calls_must_have_openais_delta_shape(text: str, ok: bool) -> None:
    assert (tool_calls_problem(text) is None) is ok


def test_chunks_must_arrive_in_sequence_and_claim_sane_tokens() -> None:
    assert chunk_problem(JobChunk(job_id="j", seq=3, text="hi"), 3) is None
    assert chunk_problem(JobChunk(job_id="j", seq=4, text="hi"), 3) is not None
    assert chunk_problem(JobChunk(job_id="j", seq=0, text="", tokens=1), 0) is None
    assert chunk_problem(JobChunk(job_id="j", seq=0, text="hi", tokens=10**6), 0) is not None


def test_usage_past_max_tokens_or_context_is_absurd() -> None:
    request = GenerationRequest(kind="chat", model="m", params=SamplingParams(max_tokens=10))
    model = ModelInfo(name="m", sha256="", engine="x", context=2048)
    assert usage_problem(Usage(100, 10), request, model) is None
    assert usage_problem(Usage(100, 10**6), request, model) is not None
    assert usage_problem(Usage(10**6, 1), request, model) is not None
    unbounded = GenerationRequest(kind="chat", model="m")
    assert usage_problem(Usage(100, 5000), unbounded, None) is None


def test_vectors_are_checked_for_count_length_dimension_and_finiteness() -> None:
    request = EmbeddingRequest(model="m", inputs=["a", "b"], dimensions=2)
    good = pack_vector([0.5, -1.0])

    def result(vectors: list[bytes], prompt: int = 2) -> EmbedResult:
        return EmbedResult(job_id="e", vectors=vectors, usage=Usage(prompt, 0))

    assert vectors_problem(result([good, good]), request) is None
    assert vectors_problem(result([good]), request) is not None
    assert vectors_problem(result([good, b"abc"]), request) is not None
    assert vectors_problem(result([b"abc", b"abc"]), request) is not None
    assert vectors_problem(result([pack_vector([1.0, math.nan])] * 2), request) is not None
    assert vectors_problem(result([pack_vector([1.0] * 3)] * 2), request) is not None
    assert vectors_problem(result([good, good], prompt=10**6), request) is not None


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        ("invalid_request_error", ErrorCode.INVALID_REQUEST),
        ("context_length_exceeded", ErrorCode.CONTEXT_LENGTH_EXCEEDED),
        ("no_capacity", ErrorCode.NO_CAPACITY),
        ("node_failed", ErrorCode.NODE_FAILED),
        ("model_not_found", ErrorCode.NODE_FAILED),
        ("insufficient_quota", ErrorCode.ENGINE_ERROR),
        ("invalid_api_key", ErrorCode.ENGINE_ERROR),
        ("no-such-code", ErrorCode.ENGINE_ERROR),
    ],
)
def test_a_node_may_only_report_errors_it_can_know(sent: str, code: ErrorCode) -> None:
    assert node_error(sent, "message").code is code


def test_a_node_signs_only_what_the_tracker_accepts(caplog: pytest.LogCaptureFixture) -> None:
    key = generate_key()
    good = ModelInfo(name="smollm2-135m", sha256="", engine="openai")
    odd = ModelInfo(name="a model with spaces", sha256="", engine="openai")
    many = [ModelInfo(name=f"m{i}", sha256="", engine="openai") for i in range(MAX_MODELS + 5)]
    manifest = sign_manifest(
        key, name="node\x00\n" + "n" * 500, peer_id="p", models=[good, odd, *many], engines=["x"]
    )
    body = verify_manifest(manifest, device_key=public_raw(key), peer_id="p")
    assert body.models[0] == good and odd not in body.models
    assert len(body.models) == MAX_MODELS
    assert len(body.name) == MAX_NAME and body.name.startswith("node  n")
    assert "not offering model" in caplog.text
