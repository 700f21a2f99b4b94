"""One ErrorCode enum for every component, and the typed exception that carries it.

Each code knows its HTTP status and its OpenAI error ``type`` so the gateway can
answer in exactly OpenAI's shape, and the wire protocol can carry the same code
between node and tracker.
"""

from __future__ import annotations

import enum
from typing import Any


class ErrorCode(enum.StrEnum):
    """Every error Lichen reports, on the API, on the wire and in the CLI."""

    # request validation (400)
    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request_error"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    CONTENT_POLICY_VIOLATION = "content_policy_violation"
    # auth and quotas
    UNAUTHORIZED = "invalid_api_key"
    FORBIDDEN = "forbidden"
    INSUFFICIENT_CREDITS = "insufficient_quota"
    RATE_LIMITED = "rate_limit_exceeded"
    # lookup
    MODEL_NOT_FOUND = "model_not_found"
    NOT_FOUND = "not_found"
    # size
    REQUEST_TOO_LARGE = "request_too_large"
    REQUEST_TIMEOUT = "request_timeout"  # the client sent its body too slowly (408)
    # capacity and failures
    NO_CAPACITY = "no_capacity"
    NODE_FAILED = "node_failed"
    ENGINE_ERROR = "engine_error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    INTERNAL = "internal_error"
    # a shared service of a cluster (message bus, Redis) cannot be reached
    SERVICE_UNAVAILABLE = "service_unavailable"
    # wire protocol and identity
    PROTOCOL_ERROR = "protocol_error"
    FRAME_TOO_LARGE = "frame_too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    HANDSHAKE_FAILED = "handshake_failed"
    IDENTITY_UNKNOWN = "identity_unknown"
    IDENTITY_REVOKED = "identity_revoked"
    IDENTITY_EXPIRED = "identity_expired"
    REPLAYED = "replayed"
    INVITE_INVALID = "invite_invalid"
    MEMBERSHIP_PENDING = "membership_pending"  # admitted by invite, awaiting approval
    MANIFEST_INVALID = "manifest_invalid"
    IDENTITY_IN_USE = "identity_in_use"  # another process with this identity is connected
    # models and storage
    HASH_MISMATCH = "hash_mismatch"
    MODEL_SOURCE_INVALID = "model_source_invalid"
    POLICY_FORBIDS = "policy_forbids"
    # accounts and ledger
    INVALID_CREDENTIALS = "invalid_credentials"
    CONFLICT = "conflict"
    RECEIPT_INVALID = "receipt_invalid"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"  # a ledger amount or token count too large
    OPERATOR_REQUIRED = "operator_required"  # admin API: the key is not an operator key

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self, 500)

    @property
    def openai_type(self) -> str:
        """The OpenAI ``error.type`` string that clients switch on."""
        status = self.http_status
        if status == 401:
            return "authentication_error"
        if status == 403:
            return "permission_error"
        if status == 404:
            return "not_found_error"
        if status == 429:
            return "rate_limit_error"
        if status == 402:
            return "insufficient_quota"
        if status < 500:
            return "invalid_request_error"
        if status == 503:
            return "service_unavailable_error"
        return "server_error"


_HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.CONTEXT_LENGTH_EXCEEDED: 400,
    ErrorCode.CONTENT_POLICY_VIOLATION: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.INSUFFICIENT_CREDITS: 402,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.MODEL_NOT_FOUND: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.NO_CAPACITY: 503,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.NODE_FAILED: 502,
    ErrorCode.ENGINE_ERROR: 500,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.CANCELLED: 499,
    ErrorCode.INTERNAL: 500,
    ErrorCode.PROTOCOL_ERROR: 400,
    ErrorCode.FRAME_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_VERSION: 400,
    ErrorCode.HANDSHAKE_FAILED: 401,
    ErrorCode.IDENTITY_UNKNOWN: 401,
    ErrorCode.IDENTITY_REVOKED: 403,
    ErrorCode.IDENTITY_EXPIRED: 401,
    ErrorCode.REPLAYED: 401,
    ErrorCode.INVITE_INVALID: 403,
    ErrorCode.MEMBERSHIP_PENDING: 403,
    ErrorCode.MANIFEST_INVALID: 400,
    ErrorCode.IDENTITY_IN_USE: 409,
    ErrorCode.HASH_MISMATCH: 400,
    ErrorCode.MODEL_SOURCE_INVALID: 400,
    ErrorCode.POLICY_FORBIDS: 403,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.CONFLICT: 409,
    ErrorCode.RECEIPT_INVALID: 400,
    ErrorCode.AMOUNT_OUT_OF_RANGE: 400,
    ErrorCode.OPERATOR_REQUIRED: 403,
}


def parse_code(value: str, *, unknown: ErrorCode) -> ErrorCode:
    """The :class:`ErrorCode` a peer sent as a string (a wire ``Error``, a JSON error
    body); ``unknown`` for a code this version does not know."""
    try:
        return ErrorCode(value)
    except ValueError:
        return unknown


class LichenError(Exception):
    """An error with a code; its message is safe to show (never prompt text)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}  # extra HTTP headers, e.g. Retry-After on a 429

    @property
    def http_status(self) -> int:
        return self.code.http_status

    def openai_body(self) -> dict[str, Any]:
        """The body OpenAI clients expect: ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.code.openai_type,
                "param": self.param,
                "code": self.code.value,
            }
        }

    def __repr__(self) -> str:
        return f"LichenError({self.code.value!r}, {self.message!r})"
