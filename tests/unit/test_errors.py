"""ErrorCode: one enum, each code with an HTTP status and an OpenAI error type."""

from __future__ import annotations

import pytest

from lichen.errors import _HTTP_STATUS, ErrorCode, LichenError


def test_every_code_has_an_explicit_status() -> None:
    missing = [code for code in ErrorCode if code not in _HTTP_STATUS]
    assert missing == []


def test_codes_are_distinct() -> None:
    # An Enum silently turns a duplicated value into an alias of the first member.
    assert len(ErrorCode.__members__) == len(list(ErrorCode))


def test_statuses_are_error_statuses() -> None:
    assert all(400 <= code.http_status <= 599 for code in ErrorCode)


@pytest.mark.parametrize(
    ("code", "status", "openai_type"),
    [
        (ErrorCode.INVALID_JSON, 400, "invalid_request_error"),
        (ErrorCode.INVALID_REQUEST, 400, "invalid_request_error"),
        (ErrorCode.CONTEXT_LENGTH_EXCEEDED, 400, "invalid_request_error"),
        (ErrorCode.UNAUTHORIZED, 401, "authentication_error"),
        (ErrorCode.INSUFFICIENT_CREDITS, 402, "insufficient_quota"),
        (ErrorCode.FORBIDDEN, 403, "permission_error"),
        (ErrorCode.MODEL_NOT_FOUND, 404, "not_found_error"),
        (ErrorCode.REQUEST_TOO_LARGE, 413, "invalid_request_error"),
        (ErrorCode.RATE_LIMITED, 429, "rate_limit_error"),
        (ErrorCode.INTERNAL, 500, "server_error"),
        (ErrorCode.NODE_FAILED, 502, "server_error"),
        (ErrorCode.NO_CAPACITY, 503, "service_unavailable_error"),
        (ErrorCode.TIMEOUT, 504, "server_error"),
        (ErrorCode.FRAME_TOO_LARGE, 413, "invalid_request_error"),
    ],
)
def test_status_and_type(code: ErrorCode, status: int, openai_type: str) -> None:
    assert code.http_status == status
    assert code.openai_type == openai_type
    assert LichenError(code, "m").http_status == status


def test_openai_compatible_code_strings() -> None:
    # Clients switch on these exact strings.
    assert ErrorCode.MODEL_NOT_FOUND.value == "model_not_found"
    assert ErrorCode.UNAUTHORIZED.value == "invalid_api_key"
    assert ErrorCode.RATE_LIMITED.value == "rate_limit_exceeded"
    assert ErrorCode.INSUFFICIENT_CREDITS.value == "insufficient_quota"
    assert ErrorCode.CONTEXT_LENGTH_EXCEEDED.value == "context_length_exceeded"


def test_openai_body_shape() -> None:
    error = LichenError(ErrorCode.INVALID_REQUEST, "Invalid value for 'top_p'", param="top_p")
    assert error.openai_body() == {
        "error": {
            "message": "Invalid value for 'top_p'",
            "type": "invalid_request_error",
            "param": "top_p",
            "code": "invalid_request_error",
        }
    }
    assert LichenError(ErrorCode.NO_CAPACITY, "busy").openai_body()["error"]["param"] is None


def test_error_is_an_exception_with_its_message() -> None:
    error = LichenError(ErrorCode.TIMEOUT, "request timed out")
    assert isinstance(error, Exception)
    assert str(error) == "request timed out"
    assert error.code is ErrorCode.TIMEOUT
    assert repr(error) == "LichenError('timeout', 'request timed out')"
