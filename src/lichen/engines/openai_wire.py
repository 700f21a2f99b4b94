"""Talking to an OpenAI-compatible upstream: SSE lines, stream chunks and error mapping.

Pure functions, no I/O: the ``openai`` engine feeds them what httpx receives.
Errors map to :class:`LichenError` codes with the status a client should see
and, for failures that another node could fix (5xx, refused credentials,
overload), a code the router retries elsewhere (``NODE_FAILED``, ``NO_CAPACITY``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lichen.engines.base import Delta
from lichen.errors import ErrorCode, LichenError
from lichen.wire.messages import Usage

MAX_UPSTREAM_MESSAGE = 300  # characters of an upstream error message passed on


@dataclass
class StreamState:
    """What one upstream stream has told us so far."""

    finish_reason: str = "stop"
    usage: Usage | None = None
    done: bool = False


def sse_data(line: str) -> str | None:
    """The payload of an SSE ``data:`` line (or llama.cpp's ``error:`` line); None otherwise."""
    for field in ("data:", "error:"):
        if line.startswith(field):
            return line[len(field) :].strip()
    return None


def parse_chunk(payload: str, state: StreamState) -> Iterator[Delta]:
    """Deltas from one stream chunk; updates ``state`` (finish reason, usage, done).

    Raises :class:`LichenError` for an error object sent inside the stream.
    """
    if payload == "[DONE]":
        state.done = True
        return
    try:
        chunk = json.loads(payload)
    except ValueError:
        raise LichenError(ErrorCode.NODE_FAILED, "the upstream sent a malformed stream") from None
    if not isinstance(chunk, dict):
        raise LichenError(ErrorCode.NODE_FAILED, "the upstream sent a malformed stream")
    if "error" in chunk:
        err = chunk["error"]
        code = err.get("code") if isinstance(err, dict) else None
        raise upstream_error(code if isinstance(code, int) and code >= 400 else 500, chunk)
    usage = chunk.get("usage")
    if isinstance(usage, dict) and "prompt_tokens" in usage:
        state.usage = Usage(
            int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        )
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") or {}
        text = choice.get("text")
        if text is None:
            text = delta.get("content")
        calls = delta.get("tool_calls")
        if text or calls:
            yield Delta(text or "", tool_calls=json.dumps(calls) if calls else "")
        if choice.get("finish_reason"):
            state.finish_reason = str(choice["finish_reason"])


def final_usage(state: StreamState) -> Usage:
    """The upstream's usage, or zeros marked as unreported: we never guess counts."""
    return state.usage if state.usage is not None else Usage(0, 0, reported=False)


def _error_fields(body: Any) -> tuple[str, str, str | None]:
    """(message, type-or-code, param) from an OpenAI- or Ollama-shaped error body."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, str):
        return err, "", None
    if not isinstance(err, dict):
        return "", "", None
    message = str(err.get("message") or "")
    kind = f"{err.get('type') or ''} {err.get('code') or ''}"
    param = err.get("param")
    return message, kind, str(param) if isinstance(param, str) else None


def upstream_error(status: int, body: Any) -> LichenError:
    """The LichenError for an upstream HTTP error ``status`` with JSON ``body``."""
    message, kind, param = _error_fields(body)
    message = message[:MAX_UPSTREAM_MESSAGE]
    if status == 400 or status == 422:
        if "context_length" in kind or "exceed_context_size" in kind:
            return LichenError(
                ErrorCode.CONTEXT_LENGTH_EXCEEDED, message or "context too long", param="messages"
            )
        return LichenError(ErrorCode.INVALID_REQUEST, message or "invalid request", param=param)
    if status == 404:
        return LichenError(
            ErrorCode.MODEL_NOT_FOUND,
            message or "the upstream does not serve this model",
            param="model",
        )
    if status == 413:
        return LichenError(ErrorCode.REQUEST_TOO_LARGE, message or "request too large")
    if status in (401, 403):
        # The node's key is wrong or revoked: not the client's fault; another node may serve.
        return LichenError(ErrorCode.NODE_FAILED, "the upstream refused this node's credentials")
    if status == 429:
        return LichenError(ErrorCode.NO_CAPACITY, "the upstream is rate limiting this node")
    if status == 501:
        return LichenError(
            ErrorCode.INVALID_REQUEST, message or "the upstream does not support this request"
        )
    if 400 <= status < 500:
        return LichenError(ErrorCode.INVALID_REQUEST, message or f"upstream said {status}")
    return LichenError(ErrorCode.NODE_FAILED, f"the upstream failed (HTTP {status})")


def decode_error_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
