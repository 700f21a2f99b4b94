"""Test helpers for the ledger: nodes with real keys that sign real receipts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.identity.certs import issue_device_certificate
from lichen.identity.signing import generate_key, peer_id, public_raw
from lichen.ledger.names import owner_account
from lichen.ledger.receipts import sign_receipt
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
