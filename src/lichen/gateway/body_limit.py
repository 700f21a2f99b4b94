"""Request bodies, bounded before any handler reads them (ASGI middleware, every route).

A handler that parses a body (FastAPI's typed bodies, forms, ``request.json()``)
reads all of it first; without a cap, a 200 MB chunked upload to a sign-up form
was read whole. :class:`BodyLimitMiddleware` sits in front of every route and:

- refuses a declared ``Content-Length`` over the route's cap at once (413), and
  counts the bytes of every body as they stream in (chunked uploads too), so a
  body over the cap is refused as soon as it crosses it (413);
- refuses a body that stalls for ``read_timeout_s`` between chunks (408);
- limits state-changing requests per client address on the routes that are not
  inference (sign-up, sign-in, forms, ``/node/telemetry``) *before* their body
  is read (429 with ``Retry-After``); inference routes are limited by the
  request guard, which also admits them before their body is read. The count
  goes through the limiter it is given (the gateway's, shared by every replica
  through ``redis_url``, failing open or closed like the rest), else one in this
  process.

Inference routes (``/v1/*`` and ``/api/*``, except ``/v1/auth`` and
``/v1/account``) get the inference cap (``max_request_bytes``); model uploads
(``/v1/catalog/uploads``, for signed-in uploaders, each chunk checked by its
route) 64 MiB; every other route the small form cap (``max_form_bytes``).
Refusals are OpenAI-shaped JSON.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lichen.errors import ErrorCode, LichenError
from lichen.http.errors import error_response
from lichen.http.requests import is_loopback_address
from lichen.ratelimit import MemoryBackend, RateLimiter, Window

if TYPE_CHECKING:
    from lichen.config import Settings

INFERENCE_PREFIXES = ("/v1/", "/api/")
FORM_PREFIXES = ("/v1/auth/", "/v1/account")  # under /v1/, but small bodies
UPLOAD_PREFIXES = ("/v1/catalog/uploads",)  # model uploads: the route checks each chunk
UPLOAD_BYTES = 64 * 1024 * 1024  # a chunk list of a very large model, or one chunk
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class BodyLimits:
    inference_bytes: int = 1_048_576  # cap for inference routes (max_request_bytes)
    form_bytes: int = 65_536  # cap for every other route (max_form_bytes)
    read_timeout_s: float = 15.0  # longest wait for the next chunk of a body
    posts_per_minute: int = 60  # state-changing non-inference requests per address (0 = off)
    limit_loopback: bool = False  # also limit the rate of loopback clients

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        return cls(
            inference_bytes=settings.max_request_bytes,
            form_bytes=settings.max_form_bytes,
            read_timeout_s=settings.body_read_timeout_s,
            posts_per_minute=settings.form_posts_per_minute,
            limit_loopback=settings.limit_loopback,
        )

    @staticmethod
    def is_inference(path: str) -> bool:
        return path.startswith(INFERENCE_PREFIXES) and not path.startswith(FORM_PREFIXES)

    def cap_for(self, path: str) -> int:
        if path.startswith(UPLOAD_PREFIXES):
            return max(UPLOAD_BYTES, self.inference_bytes)
        return self.inference_bytes if self.is_inference(path) else self.form_bytes


class BodyRefused(LichenError, HTTPException):  # type: ignore[misc]  # both carry headers
    """A body refused while a handler reads it (413 or 408).

    Also an ``HTTPException`` because FastAPI turns any other exception raised
    while it reads a typed body into "400 error parsing the body"; the gateway's
    ``LichenError`` handler (first in the MRO) still answers it in OpenAI's shape,
    and dialects that catch ``LichenError`` answer it in theirs.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        LichenError.__init__(self, code, message)
        self.status_code = code.http_status
        self.detail = message


def _too_large(cap: int) -> BodyRefused:
    return BodyRefused(
        ErrorCode.REQUEST_TOO_LARGE, f"request body exceeds the limit of {cap} bytes"
    )


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            if not text.isdigit():
                raise LichenError(ErrorCode.INVALID_REQUEST, "invalid Content-Length header")
            return int(text)
    return None


def _client_host(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


class _BodyReader:
    """Wraps ``receive``: counts the body and times out a stalled one."""

    def __init__(self, receive: Receive, cap: int, timeout_s: float) -> None:
        self._receive = receive
        self._cap = cap
        self._timeout_s = timeout_s
        self._size = 0
        self._done = False
        self.refused: BodyRefused | None = None  # set when this body was refused

    def _refuse(self, error: BodyRefused) -> BodyRefused:
        self.refused = error
        return error

    async def __call__(self) -> Message:
        if self._done:  # the body is in; what follows is the disconnect, however late
            return await self._receive()
        try:
            async with asyncio.timeout(self._timeout_s):
                message = await self._receive()
        except TimeoutError:
            raise self._refuse(
                BodyRefused(
                    ErrorCode.REQUEST_TIMEOUT,
                    f"the request body stalled for more than {self._timeout_s:g} s",
                )
            ) from None
        if message["type"] == "http.request":
            self._size += len(message.get("body", b""))
            if self._size > self._cap:
                raise self._refuse(_too_large(self._cap))
            self._done = not message.get("more_body", False)
        else:
            self._done = True
        return message


class BodyLimitMiddleware:
    """Caps, times and (for forms) rate-limits request bodies on every HTTP route."""

    def __init__(
        self, app: ASGIApp, limits: BodyLimits | None = None, limiter: RateLimiter | None = None
    ) -> None:
        self.app = app
        self.limits = limits or BodyLimits()
        self._limiter = limiter or RateLimiter(MemoryBackend())
        self._window = Window(self.limits.posts_per_minute, 60)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.limits.cap_for(scope["path"])
        try:
            declared = _declared_length(scope)
            if declared is not None and declared > cap:
                raise _too_large(cap)
            form = not self.limits.is_inference(scope["path"])
            if form and scope["method"] in STATE_CHANGING:
                await self._limit_rate(scope)
        except LichenError as error:
            await error_response(error, {"connection": "close"})(scope, receive, send)
            return
        reader = _BodyReader(receive, cap, self.limits.read_timeout_s)
        started = replaced = False

        async def checked_send(message: Message) -> None:
            # A handler that swallowed the refusal into another status (a generic
            # ``except``) does not get to answer: the refusal is the answer.
            nonlocal started, replaced
            refused = reader.refused
            if message["type"] == "http.response.start":
                started = True
                replaced = refused is not None and message["status"] != refused.http_status
                if replaced:
                    assert refused is not None
                    await error_response(refused, {"connection": "close"})(scope, receive, send)
                    return
            if not replaced:
                await send(message)

        try:
            await self.app(scope, reader, checked_send)
        except BodyRefused as error:
            # An app without handlers for it let the refusal through: answer it here.
            if started:
                raise
            await error_response(error, {"connection": "close"})(scope, receive, send)

    async def _limit_rate(self, scope: Scope) -> None:
        host = _client_host(scope)
        if self._window.limit <= 0 or (
            not self.limits.limit_loopback and is_loopback_address(host)
        ):
            return
        subject = hashlib.sha256(b"lichen-form-rate\x00" + host.encode()).hexdigest()[:24]
        await self._limiter.hit(subject, self._window)
