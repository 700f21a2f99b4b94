"""Test helpers for the ledger: nodes with real keys that sign real receipts."""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.identity.certs import issue_device_certificate
from lichen.identity.signing import generate_key, peer_id, public_raw
from lichen.ledger.names import owner_account
from lichen.ledger.receipts import sign_receipt
from lichen.ledger.tokens import byte_alphabet
from lichen.wire.messages import Usage

ISSUED_MS = 1_700_000_000_000
MODEL = "smollm2-135m"


@dataclass
class NodeKeys:
    """A node owner's account key and one certified device key."""

    account_key: Ed25519PrivateKey = field(default_factory=generate_key)
    device_key: Ed25519PrivateKey = field(default_factory=generate_key)
    cert: bytes = b""

    def __post_init__(self) -> None:
        self.cert = issue_device_certificate(
            self.account_key, public_raw(self.device_key), name="test", now_ms=ISSUED_MS - 1000
        )

    @property
    def peer_id(self) -> str:
        return peer_id(public_raw(self.device_key))

    @property
    def owner(self) -> str:
        return owner_account(public_raw(self.account_key))

    def receipt(
        self,
        *,
        job_id: str | None = None,
        model: str = MODEL,
        prompt: int = 10,
        completion: int = 20,
        issued_ms: int = ISSUED_MS,
    ) -> bytes:
        return sign_receipt(
            self.device_key,
            self.cert,
            job_id=job_id or uuid.uuid4().hex,
            model=model,
            usage=Usage(prompt, completion),
            finish_reason="stop",
            session="session-1",
            issued_ms=issued_ms,
        )


def write_vocab_gguf(
    path: Path, words: list[str], *, pre: str = "smollm", model: str = "gpt2"
) -> Path:
    """A tiny GGUF file holding only a byte-level BPE tokenizer: the 256 byte symbols
    plus one token per word in ``words`` (built by left-to-right merges); no tensors."""
    alphabet = byte_alphabet()
    tokens = list(alphabet)
    merges: list[str] = []
    for word in words:
        mapped = [alphabet[b] for b in word.encode("utf-8")]
        current = mapped[0]
        for symbol in mapped[1:]:
            merges.append(f"{current} {symbol}")
            current += symbol
            if current not in tokens:
                tokens.append(current)

    def string(text: str) -> bytes:
        raw = text.encode("utf-8")
        return struct.pack("<Q", len(raw)) + raw

    def pair(key: str, kind: int, value: bytes) -> bytes:
        return string(key) + struct.pack("<I", kind) + value

    def strings(items: list[str]) -> bytes:
        return struct.pack("<IQ", 8, len(items)) + b"".join(string(i) for i in items)

    types = struct.pack(f"<{len(tokens)}i", *[1] * len(tokens))  # all "normal"
    kvs = [
        pair("general.architecture", 8, string("llama")),
        pair("tokenizer.ggml.model", 8, string(model)),
        pair("tokenizer.ggml.pre", 8, string(pre)),
        pair("tokenizer.ggml.tokens", 9, strings(tokens)),
        pair("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, len(tokens)) + types),
        pair("tokenizer.ggml.merges", 9, strings(merges)),
    ]
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    return path
