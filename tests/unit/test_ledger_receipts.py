"""Receipts, journal entries and prices: the pure parts of the ledger."""

from __future__ import annotations

import msgspec
import pytest

from ledger_kit import MODEL, NodeKeys
from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import generate_key, public_raw
from lichen.ledger import journal, pricing
from lichen.ledger.names import ISSUANCE, is_ledger_account, owner_account, user_account
from lichen.ledger.receipts import (
    Receipt,
    countersign,
    receipt_hash,
    sign_receipt,
    verify_countersignature,
    verify_receipt,
)
from lichen.wire.messages import Usage


def test_a_genuine_receipt_verifies_and_names_its_owner() -> None:
    node = NodeKeys()
    data = node.receipt(job_id="job-1", prompt=7, completion=9)
    verified = verify_receipt(data)
    assert verified.receipt.job_id == "job-1"
    assert verified.receipt.usage == Usage(7, 9)
    assert verified.receipt.node_peer_id == node.peer_id
    assert verified.hash == receipt_hash(data)
    assert owner_account(verified.owner_key) == node.owner


def _refused(data: bytes) -> LichenError:
    with pytest.raises(LichenError) as info:
        verify_receipt(data)
    assert info.value.code is ErrorCode.RECEIPT_INVALID
    return info.value


def test_an_altered_receipt_is_refused() -> None:
    node = NodeKeys()
    receipt = msgspec.msgpack.decode(node.receipt(completion=20), type=Receipt)
    inflated = msgspec.structs.replace(receipt, usage=Usage(10, 20_000))
    error = _refused(msgspec.msgpack.encode(inflated))
    assert "signature" in error.message


def test_a_receipt_signed_by_another_key_is_refused() -> None:
    node = NodeKeys()
    # A forger holds its own key but presents the victim's certificate.
    forged = sign_receipt(
        generate_key(),
        node.cert,
        job_id="job-x",
        model=MODEL,
        usage=Usage(1, 1),
        finish_reason="stop",
        session="s",
        issued_ms=1_700_000_000_000,
    )
    _refused(forged)


def test_a_receipt_with_a_self_made_certificate_pays_the_forger_not_the_victim() -> None:
    victim, forger = NodeKeys(), NodeKeys()
    receipt = msgspec.msgpack.decode(forger.receipt(), type=Receipt)
    claimed = msgspec.structs.replace(receipt, node_peer_id=victim.peer_id)
    error = _refused(msgspec.msgpack.encode(claimed))
    assert "peer id" in error.message


def test_non_canonical_or_garbage_bytes_are_refused() -> None:
    data = NodeKeys().receipt()
    _refused(data + b"\x00")
    _refused(b"not msgpack at all")
    _refused(b"\x00" * 10_000)


def test_countersignature_binds_payer_payee_and_amount() -> None:
    key = generate_key()
    signature = countersign(key, "ab" * 32, consumer="user:a", payee="owner:b", amount=5)
    ok = {"consumer": "user:a", "payee": "owner:b", "amount": 5}
    assert verify_countersignature(public_raw(key), signature, "ab" * 32, **ok)  # type: ignore[arg-type]
    assert not verify_countersignature(
        public_raw(key), signature, "ab" * 32, consumer="user:a", payee="owner:b", amount=6
    )
    assert not verify_countersignature(
        public_raw(generate_key()),
        signature,
        "ab" * 32,
        consumer="user:a",
        payee="owner:b",
        amount=5,
    )


def test_journal_entries_chain_and_detect_edits() -> None:
    key = generate_key()
    first = journal.seal(
        key,
        seq=1,
        prev_hash=journal.GENESIS_HASH,
        kind="grant",
        debit=ISSUANCE,
        credit="user:" + "a" * 32,
        amount=100,
        receipt_hash=None,
        memo="welcome",
        recorded_ms=1,
    )
    assert journal.verify_signature(first)
    assert journal.expected_hash(first) == first.entry_hash
    edited = journal.JournalEntry(**{**_fields(first), "amount": 1_000_000})
    assert journal.expected_hash(edited) != edited.entry_hash
    second = journal.seal(
        key,
        seq=2,
        prev_hash=first.entry_hash,
        kind="grant",
        debit=ISSUANCE,
        credit="user:" + "a" * 32,
        amount=1,
        receipt_hash=None,
        memo="again",
        recorded_ms=2,
    )
    assert second.prev_hash == first.entry_hash != second.entry_hash


def _fields(entry: journal.JournalEntry) -> dict[str, object]:
    return {name: getattr(entry, name) for name in journal.JournalEntry.__dataclass_fields__}


def test_journal_refuses_negative_or_self_entries() -> None:
    key = generate_key()
    common = {"seq": 1, "prev_hash": journal.GENESIS_HASH, "kind": "grant", "receipt_hash": None}
    with pytest.raises(ValueError):
        journal.seal(key, debit="a", credit="b", amount=-1, memo="", recorded_ms=0, **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        journal.seal(key, debit="a", credit="a", amount=1, memo="", recorded_ms=0, **common)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "tier"),
    [
        ("smollm2-135m", "tiny"),
        ("qwen2.5-1.5b-instruct", "small"),
        ("llama-3-8b", "medium"),
        ("llama-3-70B", "large"),
        ("mystery-model", pricing.DEFAULT_TIER),
    ],
)
def test_tier_follows_the_size_in_the_name(model: str, tier: str) -> None:
    assert pricing.tier_for(model).name == tier


def test_cost_is_exact_integer_micro_credits() -> None:
    tiny = pricing.TIER_BY_NAME["tiny"]
    assert pricing.cost("smollm2-135m", Usage(10, 20)) == 10 * tiny.prompt + 20 * tiny.completion
    assert pricing.cost("smollm2-135m", Usage(0, 0)) == 0
    assert pricing.format_credits(1_500_000) == "1.500000"
    assert pricing.format_credits(-5) == "-0.000005"


def test_ledger_account_names() -> None:
    key = public_raw(generate_key())
    assert is_ledger_account(owner_account(key))
    assert is_ledger_account(user_account("0" * 32))
    assert is_ledger_account(ISSUANCE)
    assert not is_ledger_account("user:alice")
    assert not is_ledger_account("owner:xyz")
