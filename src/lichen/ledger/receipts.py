"""Job receipts: what a node signs when it finishes a job, and how anyone checks one.

A receipt is a msgpack-encoded :class:`Receipt`. The node signs, with its device
key, ``b"lichen-receipt-v1"`` followed by the canonical encoding of the receipt
with ``signature=b""``. The receipt carries the node's device certificate, so a
verifier needs nothing else: the certificate proves which account key (the node's
owner, who gets paid) vouches for the device key that signed.

The gateway then countersigns (:func:`countersign`) with the network key, binding
the receipt to who pays, who is paid and how much. Encodings are canonical, so a
receipt has exactly one byte form and its SHA-256 is its identity: the same
receipt twice is a replay, and a changed byte breaks the signature.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.errors import ErrorCode, LichenError
from lichen.identity.certs import DeviceCertificate, verify_device_certificate
from lichen.identity.signing import peer_id, public_raw, sign, verify
from lichen.wire.messages import Usage

__all__ = [
    "COUNTERSIGN_DOMAIN",
    "MAX_RECEIPT_BYTES",
    "RECEIPT_DOMAIN",
    "Receipt",
    "ReceiptSigner",
    "VerifiedReceipt",
    "claimed_usage",
    "countersign",
    "receipt_hash",
    "sign_receipt",
    "verify_countersignature",
    "verify_receipt",
]

RECEIPT_DOMAIN = b"lichen-receipt-v1"
COUNTERSIGN_DOMAIN = b"lichen-receipt-countersign-v1"
MAX_RECEIPT_BYTES = 4096  # a real receipt is about 400 bytes


class Receipt(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A node's signed statement that it served one job."""

    job_id: str  # the tracker's id for the job (unique per job)
    model: str  # model that served it
    usage: Usage  # tokens as the node's engine counted them
    finish_reason: str  # "stop" | "length" | "cancelled"
    node_peer_id: str  # peer id of the signing device key
    device_cert: bytes  # the node's DeviceCertificate (msgpack): device key + owner account key
    session: str  # session id of the tracker link the job ran on (Welcome.session_id)
    issued_ms: int  # node clock when signed, Unix milliseconds
    signature: bytes  # device-key signature over RECEIPT_DOMAIN + this with signature=b""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Receipt)


def _signed_bytes(receipt: Receipt) -> bytes:
    return RECEIPT_DOMAIN + _encoder.encode(msgspec.structs.replace(receipt, signature=b""))


def receipt_hash(data: bytes) -> str:
    """The identity of a receipt: hex SHA-256 of its exact bytes."""
    return hashlib.sha256(data).hexdigest()


def sign_receipt(
    device_key: Ed25519PrivateKey,
    device_cert: bytes,
    *,
    job_id: str,
    model: str,
    usage: Usage,
    finish_reason: str,
    session: str,
    issued_ms: int,
) -> bytes:
    """A receipt for one finished job, signed by ``device_key``; returns its bytes."""
    unsigned = Receipt(
        job_id=job_id,
        model=model,
        usage=usage,
        finish_reason=finish_reason,
        node_peer_id=peer_id(public_raw(device_key)),
        device_cert=device_cert,
        session=session,
        issued_ms=issued_ms,
        signature=b"",
    )
    signed = msgspec.structs.replace(unsigned, signature=sign(device_key, _signed_bytes(unsigned)))
    return _encoder.encode(signed)


@dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    """A receipt whose signature and certificate were checked."""

    receipt: Receipt
    certificate: DeviceCertificate
    hash: str  # receipt_hash of the exact bytes
    data: bytes  # the exact bytes

    @property
    def owner_key(self) -> bytes:
        """Raw public account key of the node's owner (who is paid)."""
        return self.certificate.account_key


def verify_receipt(data: bytes) -> VerifiedReceipt:
    """Decode and check a receipt; raises ``RECEIPT_INVALID`` for anything not genuine.

    Refused: oversize, malformed or non-canonical bytes, a device certificate that
    does not verify (or had expired when the receipt was issued), a peer id that is
    not the certificate's device key, negative token counts, and a signature that
    does not verify against the certified device key (forged or altered).
    """
    if not isinstance(data, bytes) or len(data) > MAX_RECEIPT_BYTES:
        raise _invalid(f"receipt is not bytes of at most {MAX_RECEIPT_BYTES}")
    try:
        receipt = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise _invalid(f"malformed receipt: {exc}") from exc
    if _encoder.encode(receipt) != data:
        raise _invalid("receipt is not canonically encoded")
    if receipt.usage.prompt_tokens < 0 or receipt.usage.completion_tokens < 0:
        raise _invalid("receipt has negative token counts")
    if not receipt.job_id or len(receipt.job_id) > 64 or receipt.issued_ms < 0:
        raise _invalid("receipt has out-of-range fields")
    try:
        cert = verify_device_certificate(receipt.device_cert, now_ms=receipt.issued_ms)
    except LichenError as exc:
        raise _invalid(f"receipt's device certificate is not valid: {exc.message}") from exc
    if peer_id(cert.device_key) != receipt.node_peer_id:
        raise _invalid("receipt's peer id does not match its device certificate")
    if not verify(cert.device_key, receipt.signature, _signed_bytes(receipt)):
        raise _invalid("receipt signature does not verify (forged or altered)")
    return VerifiedReceipt(receipt=receipt, certificate=cert, hash=receipt_hash(data), data=data)


def claimed_usage(data: bytes) -> Usage | None:
    """The usage a receipt claims, decoded without checking it (None if malformed).

    For bounding a charge only: the ledger verifies every receipt it settles.
    """
    if not isinstance(data, bytes) or not data or len(data) > MAX_RECEIPT_BYTES:
        return None
    try:
        return _decoder.decode(data).usage
    except msgspec.DecodeError:
        return None


def _countersigned_bytes(hash_hex: str, consumer: str, payee: str, amount: int) -> bytes:
    return COUNTERSIGN_DOMAIN + _encoder.encode([hash_hex, consumer, payee, amount])


def countersign(
    network_key: Ed25519PrivateKey, hash_hex: str, *, consumer: str, payee: str, amount: int
) -> bytes:
    """The gateway's signature binding a receipt to who pays, who is paid and how much."""
    return sign(network_key, _countersigned_bytes(hash_hex, consumer, payee, amount))


def verify_countersignature(
    network_public: bytes,
    signature: bytes,
    hash_hex: str,
    *,
    consumer: str,
    payee: str,
    amount: int,
) -> bool:
    return verify(
        network_public, signature, _countersigned_bytes(hash_hex, consumer, payee, amount)
    )


class ReceiptSigner:
    """What a node uses to sign receipts: its device key, certificate and link session."""

    def __init__(self, device_key: Ed25519PrivateKey, device_cert: bytes) -> None:
        self._key = device_key
        self._cert = device_cert
        self.session = ""  # set by the agent from each Welcome

    def sign(
        self, *, job_id: str, model: str, usage: Usage, finish_reason: str, issued_ms: int
    ) -> bytes:
        return sign_receipt(
            self._key,
            self._cert,
            job_id=job_id,
            model=model,
            usage=usage,
            finish_reason=finish_reason,
            session=self.session,
            issued_ms=issued_ms,
        )


def _invalid(message: str) -> LichenError:
    return LichenError(ErrorCode.RECEIPT_INVALID, message)
