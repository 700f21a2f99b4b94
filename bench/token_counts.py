"""Exact token counts: Lichen's GGUF tokenizer against llama.cpp's own, on real text.

Loads SmolLM2 in llama.cpp (xllamacpp, 1 thread) and compares, for every text:

1. ``/tokenize`` (llama.cpp's tokenizer) with :class:`lichen.ledger.tokens.BpeTokenizer`
   (the gateway's) on the repository's docs, split into paragraphs, plus a set of
   edge cases (digits, whitespace runs, accents, CJK, emoji, code);
2. the completion tokens llama.cpp reports for real answers (chat, sampled at
   temperature 0.8 with fixed seeds) with the gateway's count of the answer text:
   the retokenization gap the gateway tolerates before it records evidence.

Usage: ``.venv/bin/python bench/token_counts.py [--answers 40] [--model PATH]``
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from lichen.ledger.charge import tolerance
from lichen.ledger.gguf_vocab import read_vocab
from lichen.ledger.tokens import BpeTokenizer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / ".cache/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
EDGE_CASES = [
    "The year 2024 was 12345 long.",
    "  leading spaces   and\n\n\nnewlines\t\ttabs  ",
    "héllo wörld, naïve café — “quotes” … \u2018single\u2019",
    "日本語のテキストと中文字符 한국어",
    "emoji 🙂🚀👍🏽 and symbols ©®™ ±\u00d7÷",
    "def f(x: int) -> int:\n    return x ** 2  # comment\n",
    "I'm, you're, they've, we'll, it's, he'd",
    "URL https://example.com/a?b=1&c=2 and e-mail a.b@example.org",
    "0.000001 credits, 1,000,000 micro-credits, 3.14159e-10",
    "",
    " ",
    "\n",
]
PROMPTS = [
    "Explain photosynthesis in two sentences.",
    "Write a haiku about the sea.",
    "List three uses of a paperclip.",
    "What is 17 times 23? Show your work.",
    "Give me a Python function that reverses a string.",
    "Describe the water cycle for a child.",
    "Translate 'good morning' into French and Spanish.",
    "Why is the sky blue?",
    "Write a short story opening about a lighthouse.",
    "What are the planets of the solar system?",
]


class LlamaCpp:
    def __init__(self, model: Path) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(model)
        params.n_parallel = 1
        params.n_ctx = 4096
        params.cpuparams.n_threads = 1
        params.cpuparams_batch.n_threads = 1
        params.warmup = False
        params.verbosity = -1
        self.key = secrets.token_hex(16)
        params.api_keys = [self.key]
        self.server = xllamacpp.Server(params)
        self.base = str(self.server.listening_address).rstrip("/")

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            result: dict[str, Any] = json.loads(response.read())
        return result

    def tokens(self, text: str) -> int:
        return len(self.post("/tokenize", {"content": text, "add_special": False})["tokens"])


def paragraphs() -> list[str]:
    texts: list[str] = []
    for doc in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        texts += [p for p in doc.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--answers", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = parser.parse_args()
    started = time.perf_counter()
    ours = BpeTokenizer(read_vocab(args.model))
    print(f"vocabulary loaded from the GGUF header in {time.perf_counter() - started:.2f} s")
    llama = LlamaCpp(args.model)

    texts = EDGE_CASES + paragraphs()
    exact = 0
    worst: tuple[int, str] = (0, "")
    total_tokens = 0
    for text in texts:
        reference, counted = llama.tokens(text), ours.count(text)
        total_tokens += reference
        if reference == counted:
            exact += 1
        elif abs(reference - counted) > worst[0]:
            worst = (abs(reference - counted), text[:60])
    print(
        f"tokenize: {exact}/{len(texts)} texts counted exactly "
        f"({total_tokens} tokens in all); largest difference {worst[0]} {worst[1]!r}"
    )

    gaps: list[int] = []
    counts: list[int] = []
    for i in range(args.answers):
        answer = llama.post(
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                "max_tokens": 160,
                "temperature": args.temperature,
                "seed": 1000 + i,
            },
        )
        text = answer["choices"][0]["message"]["content"] or ""
        claimed = int(answer["usage"]["completion_tokens"])
        counted = ours.count(text)
        gaps.append(claimed - counted)
        counts.append(counted)
    print(
        f"answers: {len(gaps)} chat answers (SmolLM2, temperature {args.temperature}, "
        f"max_tokens 160); "
        f"llama.cpp's completion_tokens minus the gateway's count: "
        f"min {min(gaps)}, median {statistics.median(gaps)}, max {max(gaps)}"
    )
    histogram = {gap: gaps.count(gap) for gap in sorted(set(gaps))}
    print(f"gap histogram (tokens: answers): {histogram}")
    over = [g for g, c in zip(gaps, counts, strict=True) if g > tolerance(c)]
    print(f"answers beyond the tolerance (2 tokens + 5 %): {len(over)} of {len(gaps)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
