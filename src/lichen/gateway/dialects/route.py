"""The route class and router every API dialect's inference routes use.

A dialect declares its routes on :func:`dialect_router`; each route then

- is guarded: :func:`lichen.gateway.guard.guarded` (authentication, rate limits,
  quotas, credits) is a dependency of every route on the router, so a new route
  cannot forget it;
- reads its body with the gateway's size limit (413) and parses it as JSON
  whatever the ``Content-Type`` says (curl's default is a form type), so the
  typed body in the route's signature is validated by FastAPI and documented
  in ``/openapi.json``;
- answers every refusal (bad JSON, a failed validation, a guard refusal, any
  ``LichenError``) in the dialect's own error shape, with the quota headers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, ClassVar

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.responses import Response

from lichen.errors import ErrorCode, LichenError
from lichen.gateway.completions import read_body
from lichen.gateway.guard import QUOTA_HEADERS_STATE, guarded
from lichen.http.errors import error_response, from_validation

MAX_BODY_STATE = "lichen_max_request_bytes"  # app.state: the inference body limit
DEFAULT_MAX_BODY = 1024 * 1024

ErrorRenderer = Callable[[LichenError], Response]


class DialectRoute(APIRoute):
    """An inference route: size-limited JSON body, errors in the dialect's shape."""

    empty_body: ClassVar[bytes | None] = None  # what an empty body means (None: invalid JSON)
    # The shared checks name OpenAI chat parameters; a dialect names its own instead.
    param_names: ClassVar[dict[str, str]] = {}

    @staticmethod
    def render_error(error: LichenError) -> Response:
        return error_response(error)

    @staticmethod
    def prepare(request: Request) -> None:
        """Adjust the request before it is read and admitted (e.g. header aliases)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        render = self.render_error
        prepare = self.prepare
        names = self.param_names
        guard = any(d.dependency is guarded for d in self.dependencies)
        has_body = self.body_field is not None
        empty = self.empty_body

        async def route(request: Request) -> Response:
            try:
                prepare(request)
                await _admit_early(request, guard)
                if has_body:
                    await _prepare_json(request, empty)
                response = await handler(request)
            except LichenError as error:
                if error.param is not None:
                    head, dot, rest = error.param.partition(".")
                    if head in names:
                        error.param = names[head] + dot + rest
                        error.message = error.message.replace(head, names[head], 1)
                response = render(error)
            except RequestValidationError as exc:
                response = render(from_validation(exc))
            quota = getattr(request.state, QUOTA_HEADERS_STATE, None)
            if quota:
                for name, value in quota.items():
                    response.headers.setdefault(name, value)
            return response

        return route


async def _admit_early(request: Request, guard: bool) -> None:
    """Enter the route's guard before its body is read, for the request's lifetime.

    FastAPI reads a typed body before it solves dependencies; entering ``guarded``
    here (on the request-scoped exit stack FastAPI closes after the response) means
    a caller the guard refuses never gets its body read.
    """
    stack = request.scope.get("fastapi_inner_astack")
    if guard and isinstance(stack, AsyncExitStack):
        await stack.enter_async_context(asynccontextmanager(guarded)(request))


async def _prepare_json(request: Request, empty: bytes | None) -> None:
    """Read the body under the limit and parse it, so FastAPI validates it as JSON."""
    limit = getattr(request.app.state, MAX_BODY_STATE, DEFAULT_MAX_BODY)
    body = await read_body(request, limit)
    if not body.strip() and empty is not None:
        body = empty
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise LichenError(
            ErrorCode.INVALID_JSON, "We could not parse the JSON body of your request."
        ) from None
    # Starlette caches the body and its JSON on the request; FastAPI reads those.
    request._body = body
    request._json = parsed
    kept = [(k, v) for k, v in request.scope["headers"] if k.lower() != b"content-type"]
    request.scope["headers"] = [*kept, (b"content-type", b"application/json")]
    request._headers = Headers(scope=request.scope)


def error_responses(route_class: type[DialectRoute]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` documenting the dialect's error shape (instead of FastAPI's 422)."""
    sample = route_class.render_error(
        LichenError(ErrorCode.INVALID_REQUEST, "Invalid value for 'model'", param="model")
    )
    example = json.loads(bytes(sample.body))
    return {
        "4XX": {
            "description": "Refused (400 invalid body, 401/403 key, 404 model, 413 size, "
            "429 limits), in this dialect's error shape",
            "content": {"application/json": {"example": example}},
        },
        "5XX": {"description": "No capacity (503), timeout (504) or a node failure"},
    }


def dialect_router(
    route_class: type[DialectRoute], *, guard: bool = True, **kwargs: Any
) -> APIRouter:
    """A router whose routes answer errors with ``route_class``; guarded unless ``guard``
    is False (listing routes such as Ollama's ``/api/tags``)."""
    return APIRouter(
        route_class=route_class,
        dependencies=[Depends(guarded)] if guard else [],
        responses=error_responses(route_class),
        **kwargs,
    )
