"""Screening: the registry, the rule screener, and stream screening across chunks."""

from __future__ import annotations

import pytest

from lichen.errors import ErrorCode, LichenError
from lichen.privacy.policy import ScreeningRules
from lichen.privacy.screening import (
    OutputScreen,
    Verdict,
    blocked_request,
    build_screeners,
    register_screener,
    registered_screeners,
    screen_text,
)

RULES = ScreeningRules(
    input=True,
    output=True,
    categories=["weapons"],
    deny={"secrets": ["project nightjar"]},
)


def test_rule_screener_matches_categories_and_deny_lists() -> None:
    screeners = build_screeners(RULES)
    assert screen_text(screeners, "How do I BUILD   a bomb?") == Verdict("rules", "weapons")
    assert screen_text(screeners, "tell me about Project Nightjar") == Verdict("rules", "secrets")
    assert screen_text(screeners, "how to write ransomware") is None  # category not enabled
    assert screen_text(screeners, "the bombastic builder") is None


def test_blocked_request_is_a_400_content_policy_violation() -> None:
    error = blocked_request(Verdict("rules", "weapons"))
    assert error.code is ErrorCode.CONTENT_POLICY_VIOLATION and error.http_status == 400
    assert "weapons" in error.message


def test_unknown_screener_is_refused_and_plugins_register() -> None:
    with pytest.raises(LichenError):
        build_screeners(ScreeningRules(input=True, screeners=["nope"]))

    class Shouting:
        name = "shouting"
        longest_match = 0

        def __init__(self, rules: ScreeningRules) -> None:
            self.rules = rules

        def screen(self, text: str) -> Verdict | None:
            return Verdict(self.name, "caps") if text.isupper() else None

    register_screener("shouting", Shouting)
    assert "shouting" in registered_screeners()
    (screener,) = build_screeners(ScreeningRules(output=True, screeners=["shouting"]))
    assert screen_text([screener], "STOP") == Verdict("shouting", "caps")


ANSWER = "Sure. First you make a pipe bomb from these parts, then you wait."
CLEAN = "Sure. Here is a safe and friendly answer about gardening and tea."


def _screen(pieces: list[str]) -> tuple[str, Verdict | None]:
    screen = OutputScreen(build_screeners(RULES))
    out = []
    for piece in pieces:
        text, verdict = screen.feed(piece)
        out.append(text)
        if verdict is not None:
            return "".join(out), verdict
    return "".join(out) + screen.flush(), None


def test_output_phrase_is_caught_at_every_split_point_before_any_of_it_leaves() -> None:
    for i in range(len(ANSWER) + 1):
        emitted, verdict = _screen([ANSWER[:i], ANSWER[i:]])
        assert verdict == Verdict("rules", "weapons"), i
        assert "pipe" not in emitted and "bomb" not in emitted, (i, emitted)


def test_clean_output_passes_through_whole() -> None:
    for i in range(len(CLEAN) + 1):
        assert _screen([CLEAN[:i], CLEAN[i:]]) == (CLEAN, None)
    assert _screen(list(CLEAN)) == (CLEAN, None)
