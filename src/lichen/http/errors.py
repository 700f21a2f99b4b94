"""Errors in exactly OpenAI's shape, with the right HTTP status, for every route."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lichen.errors import ErrorCode, LichenError

log = logging.getLogger(__name__)


def error_response(error: LichenError, headers: dict[str, str] | None = None) -> JSONResponse:
    merged = error.headers | (headers or {})
    return JSONResponse(error.openai_body(), status_code=error.http_status, headers=merged or None)


def from_validation(exc: ValidationError | RequestValidationError) -> LichenError:
    """The first problem pydantic found, named by its parameter path."""
    errors = exc.errors()
    if not errors:
        return LichenError(ErrorCode.INVALID_REQUEST, "invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return LichenError(
            ErrorCode.INVALID_JSON, "We could not parse the JSON body of your request."
        )
    param = _param(first.get("loc", ()))
    # A union (``str | list[str]``) reports one error per member; a type mismatch
    # with one member says less than a real problem with another (too many items).
    same = [e for e in errors if _param(e.get("loc", ())) == param]
    first = next((e for e in same if not str(e.get("type")).endswith("_type")), first)
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
    elif param:
        message = f"Invalid value for '{param}': {message}"
    return LichenError(ErrorCode.INVALID_REQUEST, message, param=param)


# pydantic puts the member of a union in the error location ("str", "list[str]",
# "TextPart"); OpenAI names just the parameter.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|bytes|none|[A-Z]\w*|.*\[.*\])$")


def _param(loc: Iterable[int | str]) -> str | None:
    parts = [str(p) for p in loc if p != "body" and not _UNION_MEMBER.match(str(p))]
    return ".".join(parts) or None


_STATUS_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID_REQUEST,
    413: ErrorCode.REQUEST_TOO_LARGE,
}


def install_error_handlers(app: FastAPI) -> None:
    async def on_lichen(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LichenError)
        return error_response(exc)

    async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ValidationError | RequestValidationError)
        return error_response(from_validation(exc))

    async def on_http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, ErrorCode.INVALID_REQUEST)
        error = LichenError(code, str(exc.detail))
        return JSONResponse(error.openai_body(), status_code=exc.status_code)

    async def on_too_deep(_request: Request, _exc: Exception) -> JSONResponse:
        # json.loads of a body nested thousands deep (a parser's recursion limit)
        return error_response(
            LichenError(ErrorCode.INVALID_JSON, "the JSON body is nested too deeply")
        )

    async def on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s in a request handler", type(exc).__name__)
        return error_response(LichenError(ErrorCode.INTERNAL, "internal server error"))

    app.add_exception_handler(LichenError, on_lichen)
    app.add_exception_handler(ValidationError, on_validation)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RecursionError, on_too_deep)
    app.add_exception_handler(Exception, on_unexpected)
