"""Exact token counts: the GGUF vocabulary reader, the BPE tokenizer, the charge bounds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ledger_kit import write_vocab_gguf
from lichen.gateway.metering import installed_model_file
from lichen.ledger.charge import DEFAULT_CONTEXT, MAX_CONTEXT, bound_charge, tolerance
from lichen.ledger.gguf_vocab import read_vocab
from lichen.ledger.tokens import BpeTokenizer, TokenCounter
from lichen.models.store import ModelStore
from lichen.wire.messages import Usage

WORDS = ["Hello", " world", " Lichen", "ing"]
SMOLLM2 = Path(
    os.environ.get(
        "LICHEN_TEST_SMOLLM2",
        Path(__file__).resolve().parents[2]
        / ".cache/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf",
    )
)


@pytest.fixture
def vocab_file(tmp_path: Path) -> Path:
    return write_vocab_gguf(tmp_path / "tiny.gguf", WORDS)


def test_the_vocabulary_is_read_from_the_gguf_header(vocab_file: Path) -> None:
    vocab = read_vocab(vocab_file)
    assert (vocab.model, vocab.pre) == ("gpt2", "smollm")
    assert len(vocab.tokens) > 256 and "Hello" in vocab.tokens and "Ġworld" in vocab.tokens
    assert vocab.merges[0] == "H e"


def test_text_is_split_and_merged_like_llama_cpp(vocab_file: Path) -> None:
    tokenizer = BpeTokenizer(read_vocab(vocab_file))
    assert tokenizer.count("") == 0
    assert tokenizer.count("Hello world") == 2  # both words are single tokens
    assert tokenizer.count("Hello, world.") == 4  # "Hello" "," " world" "."
    assert tokenizer.count("Hello 2024") == 6  # "Hello" " " and one token per digit
    assert tokenizer.count("Helloing") == 2  # two merged words, no merge across them
    assert tokenizer.count("héllo") == 6  # bytes of unknown symbols: h, é (2 bytes), l, l, o
    assert tokenizer.count("🙂") == 4  # four UTF-8 bytes, no merges


def test_a_huge_single_word_is_counted_in_slices(vocab_file: Path) -> None:
    """One 100 KB "word" (hostile output) is not merged quadratically: it is counted in
    slices, which can only add a few tokens per slice (the word cut in two), never
    lose one."""
    tokenizer = BpeTokenizer(read_vocab(vocab_file))
    count = tokenizer.count("Hello" * 20_000)
    assert 20_000 <= count <= 20_000 + 3 * (100_000 // 256 + 1)


@pytest.mark.parametrize(
    ("model", "pre", "reason"),
    [("llama", "default", "not a byte-level BPE"), ("gpt2", "falcon", "not measured")],
)
def test_unmeasured_tokenizers_are_refused(
    tmp_path: Path, model: str, pre: str, reason: str
) -> None:
    path = write_vocab_gguf(tmp_path / "other.gguf", WORDS, pre=pre, model=model)
    with pytest.raises(ValueError, match=reason):
        BpeTokenizer(read_vocab(path))


@pytest.mark.parametrize(
    "data",
    [b"", b"GGML" + b"\0" * 20, b"GGUF\x01\0\0\0" + b"\0" * 16, b"GGUF\x03\0\0\0" + b"\xff" * 16],
)
def test_broken_files_are_refused(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(data)
    with pytest.raises(ValueError):
        read_vocab(path)


def test_a_truncated_header_is_refused(vocab_file: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(vocab_file.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated"):
        read_vocab(cut)


def test_the_counter_falls_back_to_none_without_a_usable_file(
    vocab_file: Path, tmp_path: Path
) -> None:
    files = {"tiny": vocab_file, "missing": tmp_path / "nope.gguf", "absent": None}
    counter = TokenCounter(files.get)
    assert counter.count("tiny", "Hello world") == 2
    assert counter.count("missing", "Hello world") is None
    assert counter.count("absent", "Hello world") is None
    assert counter.count("unknown-model", "Hello") is None


@pytest.mark.skipif(not SMOLLM2.is_file(), reason="SmolLM2 GGUF not pulled")
def test_smollm2_counts_match_llama_cpps_recorded_counts() -> None:
    """Counts recorded from llama.cpp's /tokenize (bench/token_counts.py measures more)."""
    tokenizer = BpeTokenizer(read_vocab(SMOLLM2))
    recorded = {
        "The year 2024 was 12345 long.": 16,
        "Hello world": 2,
    }
    for text, expected in recorded.items():
        assert tokenizer.count(text) == expected, text


# --- the charge ------------------------------------------------------------------------


def test_an_inflated_claim_is_charged_exactly_what_was_counted() -> None:
    charge = bound_charge(claimed=Usage(5, 10**12), text="x" * 6, counted=6, context=8192)
    assert charge.usage == Usage(5, 6)
    assert charge.clamped and charge.method == "counted"


def test_an_honest_claim_within_the_tolerance_is_paid_as_claimed() -> None:
    assert tolerance(0) == 2 and tolerance(500) == 27
    charge = bound_charge(claimed=Usage(5, 7), text="", counted=6, context=8192)
    assert charge.usage == Usage(5, 7) and not charge.clamped  # the end token
    under = bound_charge(claimed=Usage(5, 3), text="", counted=6, context=8192)
    assert under.usage == Usage(5, 6) and not under.clamped  # what was streamed


def test_without_a_tokenizer_the_claim_is_bounded_by_the_bytes_streamed() -> None:
    charge = bound_charge(claimed=Usage(5, 10**9), text="Hello", counted=None, context=0)
    assert charge.usage == Usage(5, 5 + tolerance(5))
    assert charge.clamped and charge.method == "bounded-claim"
    honest = bound_charge(claimed=Usage(5, 2), text="Hello", counted=None, context=0)
    assert honest.usage == Usage(5, 2) and not honest.clamped


def test_the_context_bounds_prompt_and_completion() -> None:
    charge = bound_charge(claimed=Usage(10**9, 6), text="", counted=6, context=2048)
    assert charge.usage == Usage(2048 - 6, 6) and charge.clamped
    default = bound_charge(claimed=Usage(10**9, 0), text="", counted=0, context=0)
    assert default.usage.prompt_tokens == DEFAULT_CONTEXT
    huge = bound_charge(claimed=Usage(10**9, 0), text="", counted=0, context=10**9)
    assert huge.usage.prompt_tokens == MAX_CONTEXT
    negative = bound_charge(claimed=Usage(-5, -5), text="", counted=0, context=2048)
    assert negative.usage == Usage(0, 0)


def test_the_gateway_finds_tokenizers_in_its_model_store(vocab_file: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    store.link(vocab_file, name="tiny-model")
    counter = TokenCounter(installed_model_file(tmp_path / "models"))
    assert counter.count("tiny-model", "Hello world") == 2
    assert counter.count("not-installed", "Hello world") is None
