"""The probe prompt set that ships with Lichen, and probe requests shaped like real traffic.

Probes are ordinary chat requests: the same :class:`GenerationRequest` a client's
request becomes after the gateway's pipeline (same privacy class, same sampling
fields), sent as an ordinary ``JobStart``. Nothing marks them: the prompts are
everyday questions, and the sampling parameters are drawn from the same mix real
clients send (or, once the tracker has seen real traffic, from the shapes it saw,
kept as numbers only, never text).
"""

from __future__ import annotations

import json
import random
from collections import deque
from dataclasses import dataclass
from importlib import resources

from lichen.wire.messages import ChatMessage, GenerationRequest, SamplingParams

PROBES_RESOURCE = "probes.json"
SHAPES_KEPT = 256  # recent real-request shapes the probe factory imitates


@dataclass(frozen=True)
class Probe:
    """One prompt of the probe set (no user content: it ships with Lichen)."""

    id: str
    messages: tuple[ChatMessage, ...]


@dataclass(frozen=True)
class Shape:
    """The sampling shape of a request: numbers only."""

    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    seeded: bool


# What clients send most often when the tracker has seen nothing yet: greedy and sampled
# requests, with and without a token cap (weights from the request mix of the benches).
DEFAULT_SHAPES: tuple[tuple[Shape, float], ...] = (
    (Shape(0.0, None, 64, False), 3.0),
    (Shape(0.0, None, None, False), 1.0),
    (Shape(0.7, None, 64, False), 2.0),
    (Shape(0.7, 0.9, 128, False), 1.0),
    (Shape(1.0, None, 64, True), 1.0),
)


def load_probes() -> list[Probe]:
    """The probe prompt set shipped as package data."""
    raw = resources.files("lichen.audit").joinpath("data", PROBES_RESOURCE).read_text("utf-8")
    doc = json.loads(raw)
    return [
        Probe(
            id=str(item["id"]),
            messages=tuple(
                ChatMessage(role=str(m["role"]), content=str(m["content"]))
                for m in item["messages"]
            ),
        )
        for item in doc["probes"]
    ]


class TrafficShapes:
    """A bounded memory of recent real requests' sampling shapes (no content)."""

    def __init__(self, keep: int = SHAPES_KEPT) -> None:
        self._shapes: deque[Shape] = deque(maxlen=keep)

    def __len__(self) -> int:
        return len(self._shapes)

    def observe(self, params: SamplingParams) -> None:
        if params.tools or params.response_format:
            return  # probes are plain chat; such shapes are not imitated
        self._shapes.append(
            Shape(params.temperature, params.top_p, params.max_tokens, params.seed is not None)
        )

    def draw(self, rng: random.Random) -> Shape:
        if self._shapes:
            return self._shapes[int(rng.random() * len(self._shapes))]
        shapes = [shape for shape, _ in DEFAULT_SHAPES]
        weights = [weight for _, weight in DEFAULT_SHAPES]
        picked: Shape = rng.choices(shapes, weights=weights)[0]
        return picked


class ProbeFactory:
    """Builds probe requests for a model from the probe set and the traffic shapes."""

    def __init__(
        self,
        probes: list[Probe] | None = None,
        *,
        shapes: TrafficShapes | None = None,
        rng: random.Random | None = None,
        max_tokens_cap: int = 256,
    ) -> None:
        self.probes = probes if probes is not None else load_probes()
        if not self.probes:
            raise ValueError("the probe set is empty")
        self.shapes = shapes if shapes is not None else TrafficShapes()
        self._rng = rng or random.Random()
        self.cap = max_tokens_cap  # most tokens a probe asks for

    def make(self, model: str, *, privacy_class: str = "") -> tuple[Probe, GenerationRequest]:
        probe = self.probes[int(self._rng.random() * len(self.probes))]
        shape = self.shapes.draw(self._rng)
        cap = shape.max_tokens if shape.max_tokens is not None else self.cap
        params = SamplingParams(
            max_tokens=min(cap, self.cap) if shape.max_tokens is not None else None,
            temperature=shape.temperature,
            top_p=shape.top_p,
            seed=self._rng.randrange(1 << 31) if shape.seeded else None,
        )
        request = GenerationRequest(
            kind="chat",
            model=model,
            messages=list(probe.messages),
            params=params,
            privacy_class=privacy_class,
        )
        return probe, request
