"""The gateway's token counts against llama.cpp's own, on the real SmolLM2 model.

llama.cpp runs in-process (xllamacpp, one thread); its ``/tokenize`` endpoint is the
reference for plain text, and its ``usage.completion_tokens`` for real answers, which
the gateway's count of the answer text must match within the tolerance it allows.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import DEFAULT_MODEL, REPO

from lichen.ledger.charge import tolerance
from lichen.ledger.gguf_vocab import read_vocab
from lichen.ledger.tokens import BpeTokenizer

pytestmark = pytest.mark.e2e

TEXTS = [
    "The year 2024 was 12345 long.",
    "  leading spaces   and\n\n\nnewlines\t\ttabs  ",
    "héllo wörld, naïve café — “quotes” … \u2018single\u2019",
    "日本語のテキストと中文字符 한국어",
    "emoji 🙂🚀👍🏽 and symbols ©®™ ±\u00d7÷",
    "def f(x: int) -> int:\n    return x ** 2  # comment\n",
    "I'm, you're, they've, we'll, it's, he'd",
    "0.000001 credits, 1,000,000 micro-credits, 3.14159e-10",
]


class _LlamaCpp:
    def __init__(self, model: Path) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(model)
        params.n_parallel = 1
        params.n_ctx = 2048
        params.cpuparams.n_threads = 1
        params.cpuparams_batch.n_threads = 1
        params.warmup = False
        params.verbosity = -1
        self.key = secrets.token_hex(16)
        params.api_keys = [self.key]
        self.server: Any = xllamacpp.Server(params)
        self.base = str(self.server.listening_address).rstrip("/")

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            result: dict[str, Any] = json.loads(response.read())
        return result


@pytest.fixture(scope="module")
def gguf(models_dir: Path) -> Path:
    return next(models_dir.glob(f"{DEFAULT_MODEL}/*.gguf"))


@pytest.fixture(scope="module")
def llama(gguf: Path) -> Iterator[_LlamaCpp]:
    engine = _LlamaCpp(gguf)
    yield engine
    del engine.server  # frees the model and stops its loopback listener


def test_plain_text_counts_equal_llama_cpps(gguf: Path, llama: _LlamaCpp) -> None:
    ours = BpeTokenizer(read_vocab(gguf))
    texts = TEXTS + (REPO / "README.md").read_text(encoding="utf-8").split("\n\n")[:40]
    for text in texts:
        reference = llama.post("/tokenize", {"content": text, "add_special": False})["tokens"]
        assert ours.count(text) == len(reference), text[:60]


def test_real_answers_are_counted_within_the_tolerance(gguf: Path, llama: _LlamaCpp) -> None:
    ours = BpeTokenizer(read_vocab(gguf))
    for seed, prompt in enumerate(["Why is the sky blue?", "Write a haiku about moss."]):
        answer = llama.post(
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 48,
                "temperature": 0.8,
                "seed": seed,
            },
        )
        text = answer["choices"][0]["message"]["content"] or ""
        claimed, counted = answer["usage"]["completion_tokens"], ours.count(text)
        assert claimed <= counted + tolerance(counted), (claimed, counted)  # never evidence
