"""Placeholders for personal data before routing, and the originals back in the answer.

One :class:`Pseudonymizer` serves one request: the same value always gets the same
placeholder (``<EMAIL_1>``), so the model can refer to it consistently. The
:class:`StreamRestorer` puts the originals back into a stream of text pieces; it
holds back a tail that could still become a placeholder, so a placeholder split
across chunks (``"<EMA"`` + ``"IL_1>"``) is restored too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from lichen.privacy.recognizers import Recognizer, detect

PLACEHOLDER = re.compile(r"<([A-Z][A-Z_]*_\d+)>")


class Pseudonymizer:
    """Replaces detected values with stable placeholders; remembers how to undo it."""

    def __init__(self, recognizers: Sequence[Recognizer], entities: Iterable[str] = ()) -> None:
        self.recognizers = recognizers
        self.entities = tuple(entities)
        self._by_value: dict[tuple[str, str], str] = {}
        self.originals: dict[str, str] = {}  # placeholder -> original value
        self._counts: dict[str, int] = {}

    def _placeholder(self, entity: str, value: str) -> str:
        key = (entity, value)
        found = self._by_value.get(key)
        if found is not None:
            return found
        n = self._counts.get(entity, 0) + 1
        self._counts[entity] = n
        placeholder = f"<{entity}_{n}>"
        self._by_value[key] = placeholder
        self.originals[placeholder] = value
        return placeholder

    def pseudonymize(self, text: str) -> str:
        spans = detect(text, self.recognizers, self.entities)
        if not spans:
            return text
        out: list[str] = []
        last = 0
        for span in spans:
            out.append(text[last : span.start])
            out.append(self._placeholder(span.entity, text[span.start : span.end]))
            last = span.end
        out.append(text[last:])
        return "".join(out)

    def restore(self, text: str) -> str:
        if not self.originals:
            return text
        return PLACEHOLDER.sub(lambda m: self.originals.get(m.group(0), m.group(0)), text)

    def restorer(self) -> StreamRestorer:
        return StreamRestorer(self.originals)


class StreamRestorer:
    """Restores placeholders in a stream of text pieces, whatever the chunk boundaries."""

    def __init__(self, originals: dict[str, str]) -> None:
        self.originals = originals
        self._pending = ""
        self._longest = max((len(p) for p in originals), default=0)

    def _hold_from(self, text: str) -> int:
        """Index where a suffix starts that is a proper prefix of a known placeholder."""
        start = max(0, len(text) - self._longest + 1)
        for i in range(start, len(text)):
            if text[i] == "<":
                tail = text[i:]
                if any(p.startswith(tail) and p != tail for p in self.originals):
                    return i
        return len(text)

    def _restore(self, text: str) -> str:
        return PLACEHOLDER.sub(lambda m: self.originals.get(m.group(0), m.group(0)), text)

    def feed(self, piece: str) -> str:
        """The text that is safe to emit now (placeholders restored)."""
        if not self.originals:
            return piece
        text = self._pending + piece
        cut = self._hold_from(text)
        self._pending = text[cut:]
        return self._restore(text[:cut])

    def flush(self) -> str:
        """Whatever is still held back, at the end of the stream."""
        text, self._pending = self._pending, ""
        return self._restore(text)
