"""The gateway's privacy pipeline, driven by the policy.

Before routing: pick the privacy class, screen the input, replace personal data
with placeholders. After: restore the placeholders, screen the output, and keep
the exchange if the policy says so (``dataset`` log, public feed post). The
:class:`~lichen.gateway.completions.CompletionService` calls :meth:`begin` with
the wire request and wraps the answer's events with :meth:`PrivacyRun.events`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import msgspec

from lichen.clock import now_ms
from lichen.engines.base import Delta, EngineEvent, Finish
from lichen.errors import ErrorCode, LichenError
from lichen.http.requests import bearer_token
from lichen.privacy.content import ContentRepository, Exchange, new_deletion_token, subject_of
from lichen.privacy.policy import Policy
from lichen.privacy.pseudonymize import Pseudonymizer
from lichen.privacy.recognizers import BUILTIN_RECOGNIZERS, PresidioRecognizer, Recognizer
from lichen.privacy.screening import (
    OutputScreen,
    Screener,
    blocked_request,
    build_screeners,
    screen_text,
)
from lichen.wire.messages import GenerationRequest, Usage

log = logging.getLogger(__name__)

PRIVACY_CLASS_FIELD = "lichen_privacy_class"
PRIVACY_CLASS_HEADER = "x-lichen-privacy-class"
PUBLIC_FIELD = "lichen_public"
PUBLIC_HEADER = "x-lichen-public"
REQUEST_ID_HEADER = "x-lichen-request-id"
DELETION_TOKEN_HEADER = "x-lichen-deletion-token"
CONTENT_FILTER = "content_filter"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(value: Any, name: str) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise LichenError(ErrorCode.INVALID_REQUEST, f"{name} must be true or false", param=name)


def _texts(request: GenerationRequest) -> list[str]:
    return [m.content for m in request.messages] + ([request.prompt] if request.prompt else [])


class PrivacyPipeline:
    """Built once per gateway from the policy; ``begin`` starts one request's run."""

    def __init__(self, policy: Policy, content: ContentRepository | None = None) -> None:
        self.policy = policy
        self.content = content
        self.screeners: list[Screener] = (
            build_screeners(policy.screening) if policy.screening.enabled else []
        )
        self.recognizers: list[Recognizer] = list(BUILTIN_RECOGNIZERS)
        self.presidio: PresidioRecognizer | None = None
        rules = policy.pseudonymize
        if rules.enabled and rules.presidio:
            if PresidioRecognizer.available():
                self.presidio = PresidioRecognizer()
                self.recognizers.append(self.presidio)
            else:
                log.warning("Presidio is not installed; pseudonymizing with our recognizers only")

    async def warm(self) -> None:
        """Load Presidio now (in a thread) instead of on the first request."""
        if self.presidio is not None:
            await asyncio.to_thread(self.presidio.load)

    def _public(self, headers: Mapping[str, str], extra: Mapping[str, Any]) -> bool:
        asked = _flag(extra.get(PUBLIC_FIELD), PUBLIC_FIELD)
        if asked is None:
            asked = _flag(headers.get(PUBLIC_HEADER), PUBLIC_HEADER)
        feed = self.policy.public_feed
        if asked and feed == "off":
            raise LichenError(
                ErrorCode.INVALID_REQUEST,
                "this network has no public feed; drop lichen_public",
                param=PUBLIC_FIELD,
            )
        return bool(asked) if feed == "opt_in" else feed == "default_on" and asked is not False

    async def begin(
        self,
        request: GenerationRequest,
        *,
        headers: Mapping[str, str],
        extra: Mapping[str, Any],
        user: str | None = None,
    ) -> PrivacyRun:
        """Check and transform ``request``; raises a 400 ``LichenError`` to refuse it."""
        chosen = extra.get(PRIVACY_CLASS_FIELD) or headers.get(PRIVACY_CLASS_HEADER)
        privacy_class = str(chosen) if chosen else self.policy.default_privacy_class
        self.policy.allowed_trust(privacy_class)  # 400 for an unknown class
        public = self._public(headers, extra)
        if self.policy.screening.input:
            for text in _texts(request):
                verdict = screen_text(self.screeners, text)
                if verdict is not None:
                    log.info(
                        "input blocked by screener %s (%s)", verdict.screener, verdict.category
                    )
                    raise blocked_request(verdict)
        pseudonymizer: Pseudonymizer | None = None
        routed = request
        if self.policy.pseudonymize.enabled:
            pseudonymizer = Pseudonymizer(self.recognizers, self.policy.pseudonymize.entities)
            if self.presidio is not None:
                routed = await asyncio.to_thread(_pseudonymized, request, pseudonymizer)
            else:
                routed = _pseudonymized(request, pseudonymizer)
        routed = msgspec.structs.replace(routed, privacy_class=privacy_class)
        keep = self.content is not None and (public or self.policy.prompt_logging == "full")
        return PrivacyRun(
            self,
            original=request,
            routed=routed,
            pseudonymizer=pseudonymizer,
            public=public,
            keep=keep,
            subject=subject_of(bearer_token(headers), user),
        )


def _pseudonymized(request: GenerationRequest, pseudonymizer: Pseudonymizer) -> GenerationRequest:
    messages = [
        msgspec.structs.replace(m, content=pseudonymizer.pseudonymize(m.content))
        for m in request.messages
    ]
    prompt = pseudonymizer.pseudonymize(request.prompt) if request.prompt else request.prompt
    return msgspec.structs.replace(request, messages=messages, prompt=prompt)


class PrivacyRun:
    """One request's pass through the pipeline."""

    def __init__(
        self,
        pipeline: PrivacyPipeline,
        *,
        original: GenerationRequest,
        routed: GenerationRequest,
        pseudonymizer: Pseudonymizer | None,
        public: bool,
        keep: bool,
        subject: str | None,
    ) -> None:
        self.pipeline = pipeline
        self.original = original
        self.request = routed  # what goes to the network
        self.pseudonymizer = pseudonymizer
        self.public = public
        self.keep = keep
        self.subject = subject
        self.request_id = secrets.token_hex(16)
        self.deletion_token = new_deletion_token() if keep else ""
        self.headers: dict[str, str] = {PRIVACY_CLASS_HEADER: routed.privacy_class}
        if keep:
            self.headers[REQUEST_ID_HEADER] = self.request_id
            self.headers[DELETION_TOKEN_HEADER] = self.deletion_token

    async def events(
        self, inner: AsyncGenerator[EngineEvent, None]
    ) -> AsyncGenerator[EngineEvent, None]:
        """The answer as the client must see it: restored, screened, kept per policy."""
        restorer = self.pseudonymizer.restorer() if self.pseudonymizer else None
        policy = self.pipeline.policy
        screen = OutputScreen(self.pipeline.screeners) if policy.screening.output else None
        answer: list[str] = []
        tokens = 0
        try:
            async for event in inner:
                if isinstance(event, Delta):
                    tokens += event.tokens
                    text = restorer.feed(event.text) if restorer else event.text
                    tail = ""
                else:
                    text = restorer.flush() if restorer else ""
                    tail = "end"
                blocked = False
                if screen is not None:
                    text, verdict = screen.feed(text)
                    if verdict is not None:
                        log.info(
                            "output blocked by screener %s (%s)", verdict.screener, verdict.category
                        )
                        blocked = True
                    elif tail:
                        text += screen.flush()
                calls = event.tool_calls if isinstance(event, Delta) and not blocked else ""
                if calls and self.pseudonymizer is not None:
                    calls = self.pseudonymizer.restore(calls)
                # token log probabilities describe the node's text: only while nothing
                # rewrites or holds back that text (pseudonymization, output screening)
                plain = isinstance(event, Delta) and screen is None and restorer is None
                logprobs = event.logprobs if isinstance(event, Delta) and plain else ""
                if text or calls or logprobs:
                    answer.append(text)
                    tokens_here = event.tokens if isinstance(event, Delta) else 0
                    yield Delta(text, tokens_here, calls, logprobs)
                if blocked:
                    finish = Finish(CONTENT_FILTER, Usage(0, tokens))
                    await self._keep("".join(answer), finish)
                    yield finish
                    return
                if isinstance(event, Finish):
                    await self._keep("".join(answer), event)
                    yield event
                    return
        finally:
            await inner.aclose()

    async def _keep(self, answer: str, finish: Finish) -> None:
        content = self.pipeline.content
        if not self.keep or content is None:
            return
        original = self.original
        prompt: Any = (
            [{"role": m.role, "content": m.content} for m in original.messages]
            if original.kind == "chat"
            else original.prompt
        )
        exchange = Exchange(
            request_id=self.request_id,
            created_ms=now_ms(),
            subject=self.subject,
            public=self.public,
            model=original.model,
            kind=original.kind,
            prompt=prompt,
            completion=answer,
            finish_reason=finish.finish_reason,
        )
        try:
            await content.keep(exchange, self.deletion_token, self.pipeline.policy)
        except Exception as exc:  # keeping must never break an answer
            log.warning("could not keep exchange %s: %s", self.request_id, type(exc).__name__)
