"""Checking what a node sends back: its output is untrusted input like any other.

A node can lie or break in ways the wire types cannot see: a chunk out of
sequence, ``tool_calls`` that are not JSON of OpenAI's delta shape, a usage that
no engine could produce, vectors that are not vectors, or an error code it has
no business reporting (``insufficient_quota``). Each check here returns a short,
content-free description of the problem (``None`` when the output is fine); the
tracker turns a problem into that node's failure (``NODE_FAILED``), so the
router fails over or resumes and the node's reputation pays for it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from lichen.errors import ErrorCode, LichenError, parse_code
from lichen.wire.messages import (
    EmbeddingRequest,
    EmbedResult,
    GenerationRequest,
    JobChunk,
    ModelInfo,
    Usage,
)
from lichen.wire.vectors import unpack_vector

# Errors a node may report that are the request's fault: passed on to the client as
# they are, never retried elsewhere and never counted against the node.
CLIENT_CAUSED = frozenset(
    {
        ErrorCode.INVALID_JSON,
        ErrorCode.INVALID_REQUEST,
        ErrorCode.CONTEXT_LENGTH_EXCEEDED,
        ErrorCode.CONTENT_POLICY_VIOLATION,
        ErrorCode.REQUEST_TOO_LARGE,
    }
)
# Errors that are the node's own: retried elsewhere, counted against the node.
NODE_CAUSED = frozenset({ErrorCode.NODE_FAILED, ErrorCode.ENGINE_ERROR})

MAX_TOOL_CALLS = 128  # tool calls in one delta (and the largest index)
USAGE_SLACK = 16  # tokens an engine may count past max_tokens (stop strings, templates)
MAX_USAGE = 1 << 24  # tokens in one job when the model's context is unknown
MAX_DIMENSIONS = 65536  # floats in one embedding vector
EMBED_TOKEN_SLACK = 64  # special tokens an embedding model may add per input


def node_error(code: str, message: str) -> LichenError:
    """The error the tracker passes on for a node's ``JobError``.

    Only request errors, capacity and the node's own failures are passed on; any
    other code (``insufficient_quota``, ``invalid_api_key``, an unknown string) is a
    node claiming something it cannot know, so it becomes the node's ENGINE_ERROR.
    """
    parsed = parse_code(code, unknown=ErrorCode.ENGINE_ERROR)
    if parsed is ErrorCode.ENGINE_ERROR:  # the engine's own failure, or a made-up code
        return LichenError(parsed, message or "the node's engine failed")
    if parsed is ErrorCode.MODEL_NOT_FOUND:  # it advertised the model in its manifest
        return LichenError(ErrorCode.NODE_FAILED, "the node does not serve a model it advertised")
    if parsed in CLIENT_CAUSED or parsed in NODE_CAUSED or parsed is ErrorCode.NO_CAPACITY:
        return LichenError(parsed, message)
    return LichenError(ErrorCode.ENGINE_ERROR, "the node's engine failed")


def chunk_problem(chunk: JobChunk, expected_seq: int) -> str | None:
    """What is wrong with a streamed chunk, if anything."""
    if chunk.seq != expected_seq:
        return f"chunk {chunk.seq} arrived where {expected_seq} was due"
    if chunk.tokens > len(chunk.text) + len(chunk.tool_calls) + USAGE_SLACK:
        return "a chunk claimed more tokens than it carries"
    if chunk.tool_calls:
        return tool_calls_problem(chunk.tool_calls)
    return None


def tool_calls_problem(text: str) -> str | None:
    """``None`` if ``text`` is a JSON array of OpenAI ``tool_calls`` delta objects."""
    try:
        calls = json.loads(text)
    except ValueError:
        return "tool_calls is not valid JSON"
    if not isinstance(calls, list) or len(calls) > MAX_TOOL_CALLS:
        return "tool_calls is not an array of tool calls"
    for call in calls:
        if not isinstance(call, dict) or not _call_ok(call):
            return "tool_calls does not have OpenAI's shape"
    return None


def _call_ok(call: dict[str, Any]) -> bool:
    index = call.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int):
        return False
    if not 0 <= index < MAX_TOOL_CALLS:
        return False
    if any(not isinstance(call.get(key, ""), str | None) for key in ("id", "type")):
        return False
    function = call.get("function")
    if function is None:
        return True
    if not isinstance(function, dict):
        return False
    return all(isinstance(function.get(key, ""), str | None) for key in ("name", "arguments"))


def usage_problem(usage: Usage, request: GenerationRequest, model: ModelInfo | None) -> str | None:
    """What is absurd about a finished job's usage, if anything.

    An engine never generates past ``max_tokens`` (give or take a stop string) and
    never holds more than its context in one slot (give or take rounding: the bound
    is twice the advertised context, so only absurd claims are caught here).
    """
    limit = request.params.max_tokens
    if limit is not None and usage.completion_tokens > limit + USAGE_SLACK:
        return "the node reported more completion tokens than max_tokens allows"
    # Generous: the engine may round its per-slot context up (llama.cpp pads n_ctx).
    context = 2 * model.context + 256 if model is not None and model.context > 0 else MAX_USAGE
    if usage.prompt_tokens + usage.completion_tokens > context:
        return "the node reported more tokens than its context holds"
    return None


def vectors_problem(result: EmbedResult, request: EmbeddingRequest) -> str | None:
    """What is wrong with a node's embeddings, if anything: count, length, dimension, NaN."""
    if len(result.vectors) != len(request.inputs):
        return "the node sent the wrong number of vectors"
    sizes = {len(v) for v in result.vectors}
    if len(sizes) > 1:
        return "the node sent vectors of different lengths"
    size = sizes.pop() if sizes else 0
    if result.vectors and (size == 0 or size % 4 or size > 4 * MAX_DIMENSIONS):
        return "the node sent a vector that is not whole float32 values"
    if request.dimensions is not None and result.vectors and size != 4 * request.dimensions:
        return "the node sent vectors of another dimension than requested"
    for vector in result.vectors:
        if not all(map(math.isfinite, unpack_vector(vector))):
            return "the node sent a vector with NaN or infinite values"
    most = sum(len(text.encode()) + EMBED_TOKEN_SLACK for text in request.inputs)
    if result.usage.prompt_tokens > most:
        return "the node reported more tokens than its inputs hold"
    return None
