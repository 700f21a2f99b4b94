"""The engine protocol: what a node needs from anything that generates text.

An engine turns a typed :class:`GenerationRequest` into an async stream of
:class:`Delta` events ending in exactly one :class:`Finish`. Closing the stream
early (``aclose``) cancels the generation. Engines raise :class:`LichenError`
for bad requests, never return an error as text.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from lichen.wire.messages import EmbeddingRequest, GenerationRequest, ModelInfo, Usage


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of generated text."""

    text: str
    tokens: int = 1
    tool_calls: str = ""  # OpenAI delta ``tool_calls`` array as JSON text, "" when none
    logprobs: str = ""  # OpenAI ``logprobs.content`` entries of this delta as JSON text


@dataclass(frozen=True, slots=True)
class Finish:
    """The end of a generation; always the last event."""

    finish_reason: str  # "stop" | "length" | "cancelled"
    usage: Usage
    receipt: bytes = b""  # the node's signed receipt (set by the tracker from JobEnd)
    job_id: str = ""  # the tracker's job id (set by the tracker)


EngineEvent = Delta | Finish


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """A snapshot of how busy an engine is (for heartbeats)."""

    free_slots: int
    queue_depth: int
    tokens_per_s: float
    stalled: bool = False  # work waiting but no progress for a while (the loop is stuck)


@runtime_checkable
class Engine(Protocol):
    """Something a node can run jobs on."""

    kind: str  # "llamacpp" | "openai" | ...

    def models(self) -> list[ModelInfo]:
        """The models this engine serves right now."""
        ...

    def load(self) -> EngineLoad:
        """Current load, cheap to call."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncGenerator[EngineEvent, None]:
        """Stream the answer to ``request``; ``aclose()`` cancels it."""
        ...

    async def close(self) -> None:
        """Release the engine's resources."""
        ...


@dataclass(frozen=True, slots=True)
class Embeddings:
    """The answer to an :class:`EmbeddingRequest`: one float32 vector per input."""

    vectors: list[bytes]  # little-endian float32 values, in input order
    usage: Usage


ModelsChanged = Callable[[], None]


@runtime_checkable
class Embedder(Protocol):
    """An engine that can also embed text (models with ``embeddings=True``)."""

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Embed ``request.inputs``; raise LichenError if the model cannot."""
        ...


@runtime_checkable
class WatchesModels(Protocol):
    """An engine whose model list can change while it runs (e.g. an upstream went away).

    The node agent registers a callback and re-sends its signed manifest when it fires.
    """

    def on_models_changed(self, callback: ModelsChanged) -> None:
        """Call ``callback`` (on the event loop) whenever ``models()`` changes."""
        ...
