"""The gateway's request pipeline hook, as protocols (the privacy package implements it).

:meth:`RequestPipeline.begin` sees each wire request before it is routed and may
refuse it (a ``LichenError``) or transform it; the returned :class:`PipelineRun`
wraps the answer's events and adds response headers.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol

from lichen.engines.base import EngineEvent
from lichen.wire.messages import GenerationRequest


class PipelineRun(Protocol):
    @property
    def request(self) -> GenerationRequest:
        """The request to route (after the pipeline's changes)."""
        ...

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers."""
        ...

    def events(self, inner: AsyncGenerator[EngineEvent, None]) -> AsyncGenerator[EngineEvent, None]:
        """The answer as the client sees it."""
        ...


class RequestPipeline(Protocol):
    async def begin(
        self,
        request: GenerationRequest,
        *,
        headers: Mapping[str, str],
        extra: Mapping[str, Any],
        user: str | None = None,
    ) -> PipelineRun: ...
