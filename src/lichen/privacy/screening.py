"""Safety screening through pluggable screeners.

Screeners are registered by name (:func:`register_screener`), built-ins the same way
as any plug-in; a policy's ``[screening] screeners`` picks them. The built-in
``rules`` screener matches phrases per category: a small built-in list for the
categories it knows, plus the policy's own deny lists. :class:`OutputScreen`
screens a stream, holding back just enough text that a phrase split across chunks
is still caught before any of it reaches the client.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from lichen.errors import ErrorCode, LichenError
from lichen.privacy.policy import ScreeningRules


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a text was blocked (never the text itself)."""

    screener: str
    category: str


class Screener(Protocol):
    name: str

    @property
    def longest_match(self) -> int:
        """The longest text a match can span (for streaming hold-back)."""
        ...

    def screen(self, text: str) -> Verdict | None: ...


ScreenerFactory = Callable[[ScreeningRules], Screener]

_REGISTRY: dict[str, ScreenerFactory] = {}


def register_screener(name: str, factory: ScreenerFactory) -> None:
    """Make a screener available to policies under ``name``."""
    _REGISTRY[name] = factory


def registered_screeners() -> list[str]:
    return sorted(_REGISTRY)


def build_screeners(rules: ScreeningRules) -> list[Screener]:
    unknown = [name for name in rules.screeners if name not in _REGISTRY]
    if unknown:
        raise LichenError(
            ErrorCode.INVALID_REQUEST,
            f"unknown screeners {unknown}; registered: {registered_screeners()}",
        )
    return [_REGISTRY[name](rules) for name in rules.screeners]


# Phrases per built-in category; policies add their own with [screening.deny].
BUILTIN_CATEGORIES: dict[str, tuple[str, ...]] = {
    "weapons": (
        "build a bomb",
        "make a bomb",
        "make a pipe bomb",
        "synthesize sarin",
        "make nerve gas",
        "make napalm",
    ),
    "malware": (
        "write ransomware",
        "create ransomware",
        "write a keylogger",
        "build a botnet",
    ),
    "self_harm": (
        "how to kill myself",
        "ways to kill myself",
        "help me end my life",
    ),
}


def _phrase_pattern(phrase: str) -> str:
    words = [re.escape(w) for w in phrase.split()]
    return r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)"


class RuleScreener:
    """Case-insensitive phrase matching per enabled category."""

    name = "rules"

    def __init__(self, rules: ScreeningRules) -> None:
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        longest = 0
        categories = list(dict.fromkeys([*rules.categories, *rules.deny]))
        for category in categories:
            phrases = [*BUILTIN_CATEGORIES.get(category, ()), *rules.deny.get(category, [])]
            phrases = [p for p in phrases if p.strip()]
            if not phrases:
                continue
            longest = max(longest, *(len(p) for p in phrases))
            joined = "|".join(_phrase_pattern(p) for p in phrases)
            self._patterns.append((category, re.compile(joined, re.IGNORECASE)))
        self._longest = longest

    @property
    def longest_match(self) -> int:
        return self._longest

    def screen(self, text: str) -> Verdict | None:
        for category, pattern in self._patterns:
            if pattern.search(text):
                return Verdict(self.name, category)
        return None


register_screener("rules", RuleScreener)


def screen_text(screeners: list[Screener], text: str) -> Verdict | None:
    for screener in screeners:
        verdict = screener.screen(text)
        if verdict is not None:
            return verdict
    return None


def blocked_request(verdict: Verdict) -> LichenError:
    return LichenError(
        ErrorCode.CONTENT_POLICY_VIOLATION,
        f"This request was blocked by the network's content policy (category: {verdict.category}).",
        param="messages",
    )


class OutputScreen:
    """Screens a stream of text; emits only what is known to be clean."""

    def __init__(self, screeners: list[Screener]) -> None:
        self.screeners = screeners
        self._hold = max((s.longest_match for s in screeners), default=0) + 8
        self._released_tail = ""
        self._pending = ""

    def feed(self, piece: str) -> tuple[str, Verdict | None]:
        """(text safe to emit now, the verdict if the stream must stop here)."""
        self._pending += piece
        verdict = screen_text(self.screeners, self._released_tail + self._pending)
        if verdict is not None:
            self._pending = ""
            return "", verdict
        if len(self._pending) <= self._hold:
            return "", None
        cut = len(self._pending) - self._hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        self._released_tail = (self._released_tail + out)[-self._hold :]
        return out, None

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out
