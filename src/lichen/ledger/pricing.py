"""Prices: integer micro-credits per token, by model tier.

A model's tier comes from an explicit entry in :data:`MODEL_TIERS`, else from the
parameter count in its name (``smollm2-135m`` -> 135M -> ``tiny``; ``llama-3-8b``
-> 8B -> ``medium``), else :data:`DEFAULT_TIER`. Prices are integers, so a cost
is exact: ``prompt_tokens * prompt + completion_tokens * completion``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lichen.wire.messages import Usage

MICRO_PER_CREDIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    max_params: float  # largest parameter count in this tier
    prompt: int  # micro-credits per prompt token
    completion: int  # micro-credits per completion token


TIERS: tuple[Tier, ...] = (
    Tier("tiny", 1.0e9, prompt=1, completion=2),
    Tier("small", 4.0e9, prompt=3, completion=6),
    Tier("medium", 15.0e9, prompt=10, completion=20),
    Tier("large", 80.0e9, prompt=30, completion=60),
    Tier("xlarge", float("inf"), prompt=100, completion=200),
)
TIER_BY_NAME = {tier.name: tier for tier in TIERS}
DEFAULT_TIER = "medium"

# Models whose names do not say their size, pinned to a tier.
MODEL_TIERS: dict[str, str] = {}

_SIZE = re.compile(r"(?<![0-9a-z.])(\d+(?:\.\d+)?)([mb])(?![a-z])", re.IGNORECASE)


def parameters_in_name(model: str) -> float | None:
    """Parameter count written in a model name ("135m", "1.5b", "70B"), or None."""
    match = _SIZE.search(model.replace("_", "-"))
    if match is None:
        return None
    scale = 1e6 if match.group(2).lower() == "m" else 1e9
    return float(match.group(1)) * scale


def tier_for(model: str) -> Tier:
    pinned = MODEL_TIERS.get(model.lower())
    if pinned is not None:
        return TIER_BY_NAME[pinned]
    params = parameters_in_name(model)
    if params is None:
        return TIER_BY_NAME[DEFAULT_TIER]
    return next(tier for tier in TIERS if params <= tier.max_params)


def cost(model: str, usage: Usage) -> int:
    """What ``usage`` of ``model`` costs, in micro-credits."""
    tier = tier_for(model)
    prompt = max(0, usage.prompt_tokens)
    completion = max(0, usage.completion_tokens)
    return prompt * tier.prompt + completion * tier.completion


def format_credits(micro: int) -> str:
    """Micro-credits as credits with six decimals: 1500000 -> "1.500000"."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO_PER_CREDIT)
    return f"{sign}{whole}.{frac:06d}"
