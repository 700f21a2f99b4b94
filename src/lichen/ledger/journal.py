"""Journal entries: double-entry lines, hash-chained and signed (pure; no I/O).

Every entry moves ``amount`` micro-credits from ``debit`` to ``credit``. Its hash
covers every field plus the previous entry's hash, so changing, inserting,
reordering or deleting any entry breaks the chain from there on; and the gateway
signs each hash with the network key, so rebuilding the chain after an edit
needs that key too::

    entry_hash = sha256(b"lichen-journal-v1" + msgpack([seq, prev_hash, kind, debit,
                        credit, amount, receipt_hash or "", memo, recorded_ms]))
    signature  = Ed25519(network key, b"lichen-journal-sig-v1" + entry_hash bytes)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.identity.signing import public_raw, sign, verify

__all__ = [
    "ENTRY_KINDS",
    "GENESIS_HASH",
    "MAX_AMOUNT",
    "EntryKind",
    "JournalEntry",
    "compute_hash",
    "seal",
    "verify_signature",
]

GENESIS_HASH = "0" * 64  # prev_hash of the first entry
HASH_DOMAIN = b"lichen-journal-v1"
SIGNATURE_DOMAIN = b"lichen-journal-sig-v1"

EntryKind = Literal["grant", "settle", "hold", "release", "forfeit"]
ENTRY_KINDS: tuple[EntryKind, ...] = ("grant", "settle", "hold", "release", "forfeit")
MAX_AMOUNT = 10**15  # micro-credits per entry (a billion credits); far below 2**63

_encoder = msgspec.msgpack.Encoder()


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntry:
    """One journal line as stored."""

    seq: int  # 1, 2, 3, ... without gaps
    prev_hash: str  # entry_hash of seq - 1 (GENESIS_HASH for seq 1)
    kind: EntryKind
    debit: str  # ledger account that pays
    credit: str  # ledger account that receives
    amount: int  # micro-credits, >= 0
    receipt_hash: str | None  # settle/hold/release/forfeit: the receipt concerned; grant: None
    memo: str  # grant: the operator's reason; hold: "due_ms=<ms>"; forfeit: the reason
    recorded_ms: int
    entry_hash: str
    signer_key: bytes  # raw network public key
    signature: bytes


def compute_hash(
    *,
    seq: int,
    prev_hash: str,
    kind: str,
    debit: str,
    credit: str,
    amount: int,
    receipt_hash: str | None,
    memo: str,
    recorded_ms: int,
) -> str:
    body = [seq, prev_hash, kind, debit, credit, amount, receipt_hash or "", memo, recorded_ms]
    return hashlib.sha256(HASH_DOMAIN + _encoder.encode(body)).hexdigest()


def expected_hash(entry: JournalEntry) -> str:
    """What ``entry.entry_hash`` must be, recomputed from its fields."""
    return compute_hash(
        seq=entry.seq,
        prev_hash=entry.prev_hash,
        kind=entry.kind,
        debit=entry.debit,
        credit=entry.credit,
        amount=entry.amount,
        receipt_hash=entry.receipt_hash,
        memo=entry.memo,
        recorded_ms=entry.recorded_ms,
    )


def seal(
    network_key: Ed25519PrivateKey,
    *,
    seq: int,
    prev_hash: str,
    kind: EntryKind,
    debit: str,
    credit: str,
    amount: int,
    receipt_hash: str | None,
    memo: str,
    recorded_ms: int,
) -> JournalEntry:
    """A new entry: hashed onto ``prev_hash`` and signed with ``network_key``."""
    if amount < 0:
        raise ValueError("a journal amount is never negative; swap debit and credit")
    if amount > MAX_AMOUNT:
        raise ValueError(f"a journal amount is at most {MAX_AMOUNT} micro-credits")
    if debit == credit:
        raise ValueError("an entry moves credits between two different accounts")
    digest = compute_hash(
        seq=seq,
        prev_hash=prev_hash,
        kind=kind,
        debit=debit,
        credit=credit,
        amount=amount,
        receipt_hash=receipt_hash,
        memo=memo,
        recorded_ms=recorded_ms,
    )
    return JournalEntry(
        seq=seq,
        prev_hash=prev_hash,
        kind=kind,
        debit=debit,
        credit=credit,
        amount=amount,
        receipt_hash=receipt_hash,
        memo=memo,
        recorded_ms=recorded_ms,
        entry_hash=digest,
        signer_key=public_raw(network_key),
        signature=sign(network_key, SIGNATURE_DOMAIN + bytes.fromhex(digest)),
    )


def verify_signature(entry: JournalEntry) -> bool:
    """True if ``entry.signature`` is ``entry.signer_key``'s signature of its hash."""
    try:
        digest = bytes.fromhex(entry.entry_hash)
    except ValueError:
        return False
    return verify(entry.signer_key, entry.signature, SIGNATURE_DOMAIN + digest)
