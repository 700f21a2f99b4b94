"""Personal data detection, stable placeholders and their restoration in streams."""

from __future__ import annotations

import itertools

import pytest

from lichen.privacy.pseudonymize import Pseudonymizer, StreamRestorer
from lichen.privacy.recognizers import (
    BUILTIN_RECOGNIZERS,
    PresidioRecognizer,
    detect,
    iban_ok,
    luhn_ok,
)

EMAIL = "ada.lovelace@example.org"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"
IPV4 = "203.0.113.77"
IPV6 = "2001:db8::8a2e:370:7334"
API_KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234"


def entities(text: str) -> list[tuple[str, str]]:
    return [(s.entity, text[s.start : s.end]) for s in detect(text, BUILTIN_RECOGNIZERS)]


def test_regex_recognizers_find_each_kind() -> None:
    text = (
        f"Mail {EMAIL}, phone {PHONE}, card {CARD}, iban {IBAN}, "
        f"hosts {IPV4} and {IPV6}, key {API_KEY}."
    )
    assert entities(text) == [
        ("EMAIL", EMAIL),
        ("PHONE", PHONE),
        ("CREDIT_CARD", CARD),
        ("IBAN", IBAN),
        ("IP_ADDRESS", IPV4),
        ("IP_ADDRESS", IPV6),
        ("API_KEY", API_KEY),
    ]


def test_checksums_keep_false_positives_out() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok(IBAN) and not iban_ok("DE89 3704 0044 0532 0130 01")
    assert entities("order 4111 1111 1111 1112 shipped") == []  # fails Luhn, not a phone
    assert entities("version 1.2.3 at 12:30:45 on 2024-05-01") == []
    assert entities("no DE89 3704 0044 0532 0130 01 here") == []


def test_placeholders_are_stable_and_restorable() -> None:
    p = Pseudonymizer(BUILTIN_RECOGNIZERS)
    first = p.pseudonymize(f"Write to {EMAIL} or {EMAIL}; call {PHONE}.")
    second = p.pseudonymize(f"Again: {EMAIL}, and also bob@example.com")
    assert first == "Write to <EMAIL_1> or <EMAIL_1>; call <PHONE_1>."
    assert second == "Again: <EMAIL_1>, and also <EMAIL_2>"
    assert EMAIL not in first + second
    assert p.restore("Sent to <EMAIL_2>, cc <EMAIL_1>, not <EMAIL_9>.") == (
        f"Sent to bob@example.com, cc {EMAIL}, not <EMAIL_9>."
    )


def test_entities_filter() -> None:
    p = Pseudonymizer(BUILTIN_RECOGNIZERS, entities=["EMAIL"])
    assert p.pseudonymize(f"{EMAIL} {PHONE}") == f"<EMAIL_1> {PHONE}"


ANSWER = "Dear <PERSON_1>, I wrote to <EMAIL_1> and <EMAIL_12>; <PHONE_1> too. <b>x</b> <EMAIL"
ORIGINALS = {
    "<PERSON_1>": "Ada",
    "<EMAIL_1>": EMAIL,
    "<EMAIL_12>": "z@example.net",
    "<PHONE_1>": PHONE,
}
RESTORED = f"Dear Ada, I wrote to {EMAIL} and z@example.net; {PHONE} too. <b>x</b> <EMAIL"


def _run(pieces: list[str]) -> str:
    restorer = StreamRestorer(ORIGINALS)
    out = [restorer.feed(piece) for piece in pieces]
    out.append(restorer.flush())
    emitted = "".join(out)
    # Nothing of a placeholder ever leaks out half-restored.
    assert all("<EMAIL_1" not in o or "<EMAIL_1>" not in ANSWER for o in out[:-1])
    return emitted


def test_restorer_with_every_single_split_point() -> None:
    for i in range(len(ANSWER) + 1):
        assert _run([ANSWER[:i], ANSWER[i:]]) == RESTORED, i


def test_restorer_with_every_pair_of_split_points() -> None:
    for i, j in itertools.combinations(range(len(ANSWER) + 1), 2):
        assert _run([ANSWER[:i], ANSWER[i:j], ANSWER[j:]]) == RESTORED, (i, j)


def test_restorer_one_character_at_a_time_never_emits_a_placeholder() -> None:
    restorer = StreamRestorer(ORIGINALS)
    emitted = [restorer.feed(ch) for ch in ANSWER] + [restorer.flush()]
    assert "".join(emitted) == RESTORED
    assert not any(p in "".join(emitted) for p in ORIGINALS)


@pytest.mark.skipif(not PresidioRecognizer.available(), reason="Presidio is not installed")
def test_presidio_adds_names_offline() -> None:
    p = Pseudonymizer([*BUILTIN_RECOGNIZERS, PresidioRecognizer()])
    text = p.pseudonymize(f"My name is Margaret Hamilton and my email is {EMAIL}.")
    assert "Margaret Hamilton" not in text and EMAIL not in text
    assert "<PERSON_1>" in text and "<EMAIL_1>" in text
    assert p.restore(text) == f"My name is Margaret Hamilton and my email is {EMAIL}."
