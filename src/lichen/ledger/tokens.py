"""Count tokens with the model's own tokenizer, read from its GGUF file.

The gateway settles on what it streamed, counted here, never on the node's claim
alone. :class:`BpeTokenizer` re-implements llama.cpp's byte-level BPE tokenizer
(``tokenizer.ggml.model = "gpt2"``): the pre-tokenizer's regular expressions split
the text, each piece's UTF-8 bytes map to the GPT-2 byte alphabet, and merges are
applied lowest rank first, leftmost first. Text is tokenized as plain text (special
tokens are not parsed), as the answer reached the client.

Only pre-tokenizers whose counts were measured equal to llama.cpp's on real text
are enabled (:data:`PRE_TOKENIZERS`; see docs/accounts.md). For any other model,
or where the gateway has no copy of the model file, :meth:`TokenCounter.count`
returns None and the gateway falls back to the node's claim, bounded by what it
streamed (:mod:`lichen.ledger.charge`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import regex

from lichen.ledger.gguf_vocab import GGUFVocab, read_vocab

__all__ = ["PRE_TOKENIZERS", "BpeTokenizer", "TokenCounter", "byte_alphabet"]

log = logging.getLogger(__name__)

_GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"""

# llama.cpp's pre-tokenizer expressions (llama-vocab.cpp), applied in sequence; each
# splits the pieces left by the one before. Only measured ones are listed.
PRE_TOKENIZERS: dict[str, tuple[str, ...]] = {
    "smollm": (r"\p{N}", _GPT2),
}

CACHE_PIECES = 1 << 16
MAX_PIECE = 256  # characters; longer pieces (no real word is) are counted in slices


@lru_cache(maxsize=1)
def byte_alphabet() -> tuple[str, ...]:
    """GPT-2's reversible byte -> printable character map."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))


class BpeTokenizer:
    """Byte-level BPE with llama.cpp's pre-tokenization (counts plain text)."""

    def __init__(self, vocab: GGUFVocab) -> None:
        if vocab.model != "gpt2":
            raise ValueError(f"not a byte-level BPE tokenizer: {vocab.model!r}")
        expressions = PRE_TOKENIZERS.get(vocab.pre)
        if expressions is None:
            raise ValueError(f"pre-tokenizer {vocab.pre!r} is not measured against llama.cpp")
        self._splitters = [regex.compile(e) for e in expressions]
        self._ids = {token: i for i, token in enumerate(vocab.tokens)}
        self._ranks: dict[tuple[str, str], int] = {}
        for rank, merge in enumerate(vocab.merges):
            left, _, right = merge.partition(" ")
            self._ranks.setdefault((left, right), rank)
        self._alphabet = byte_alphabet()
        self._cache: dict[str, int] = {}
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        """Tokens llama.cpp makes of ``text`` (as plain text, no BOS)."""
        return sum(self._piece_tokens(piece) for piece in self._pieces(text))

    def _pieces(self, text: str) -> list[str]:
        pieces = [text] if text else []
        for splitter in self._splitters:
            split: list[str] = []
            for piece in pieces:
                start = 0
                for match in splitter.finditer(piece):
                    if match.start() > start:
                        split.append(piece[start : match.start()])
                    if match.end() > match.start():
                        split.append(match.group())
                    start = match.end()
                if start < len(piece):
                    split.append(piece[start:])
            pieces = split
        return pieces

    def _piece_tokens(self, piece: str) -> int:
        if len(piece) > MAX_PIECE:
            # Merging is quadratic in a piece's length: a hostile answer that is one
            # 100 KB "word" must not stall the gateway. Count it in slices instead
            # (no merge across a cut: a few tokens more per slice, never fewer).
            return sum(
                self._piece_tokens(piece[i : i + MAX_PIECE])
                for i in range(0, len(piece), MAX_PIECE)
            )
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        symbols = [self._alphabet[b] for b in piece.encode("utf-8")]
        count = len(self._merge(symbols))
        with self._lock:
            if len(self._cache) >= CACHE_PIECES:
                self._cache.clear()
            self._cache[piece] = count
        return count

    def _merge(self, symbols: list[str]) -> list[str]:
        while len(symbols) > 1:
            best_rank, best_at = -1, -1
            for i in range(len(symbols) - 1):
                rank = self._ranks.get((symbols[i], symbols[i + 1]))
                if rank is not None and (best_rank < 0 or rank < best_rank):
                    best_rank, best_at = rank, i
            if best_at < 0:
                break
            symbols[best_at : best_at + 2] = [symbols[best_at] + symbols[best_at + 1]]
        # A symbol missing from the vocabulary falls back to one token per byte.
        return [part for s in symbols for part in ([s] if s in self._ids else list(s))]


ModelFile = Callable[[str], Path | None]  # model name -> its GGUF file here, if any


class TokenCounter:
    """Per-model tokenizers for the models this gateway has a copy of.

    ``model_file`` maps a model name to its local GGUF file (None: no copy). A
    tokenizer is loaded once per model, on first use; models without a usable
    tokenizer are remembered as such and :meth:`count` returns None for them.
    """

    def __init__(self, model_file: ModelFile) -> None:
        self._model_file = model_file
        self._tokenizers: dict[str, BpeTokenizer | None] = {}
        self._lock = threading.Lock()

    def tokenizer(self, model: str) -> BpeTokenizer | None:
        with self._lock:
            if model in self._tokenizers:
                return self._tokenizers[model]
        loaded: BpeTokenizer | None = None
        try:
            path = self._model_file(model)
            if path is not None:
                loaded = BpeTokenizer(read_vocab(path))
        except (OSError, ValueError) as exc:
            log.info("no exact token counts for %s: %s", model, exc)
        with self._lock:
            self._tokenizers[model] = loaded
        return loaded

    def count(self, model: str, text: str) -> int | None:
        """Tokens of ``text`` under ``model``'s tokenizer, or None without one."""
        tokenizer = self.tokenizer(model)
        return None if tokenizer is None else tokenizer.count(text)
