"""The tracker's signature over its policy document, and the node's check of it.

The signed bytes are the policy file exactly as the operator wrote it (so what is
published is verbatim what is enforced), prefixed by a domain-separation tag. On
the wire (``Welcome.policy``) a :class:`SignedPolicy` travels as msgpack; on the
web (``GET /privacy.json``) as JSON with base64 fields.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import public_raw, sign, verify
from lichen.privacy.policy import Policy, parse_policy

POLICY_SIG_DOMAIN = b"lichen-network-policy-v1\x00"
MAX_POLICY_BYTES = 64 * 1024


class SignedPolicy(msgspec.Struct, frozen=True):
    document: bytes  # the policy TOML, byte for byte as published
    signature: bytes  # network-key signature over POLICY_SIG_DOMAIN || document
    network_key: bytes  # raw Ed25519 public key of the network that signed it

    @property
    def digest(self) -> str:
        """SHA-256 of the document: a short, stable id for this exact policy."""
        return hashlib.sha256(self.document).hexdigest()

    def encode(self) -> bytes:
        return msgspec.msgpack.encode(self)

    def public_json(self, policy: Policy) -> dict[str, Any]:
        """The body of ``GET /privacy.json``."""
        return {
            "policy": policy.model_dump(mode="json"),
            "document": self.document.decode("utf-8"),
            "sha256": self.digest,
            "signature": base64.b64encode(self.signature).decode("ascii"),
            "network_key": base64.b64encode(self.network_key).decode("ascii"),
            "signature_scheme": "ed25519 over 'lichen-network-policy-v1\\0' + document",
        }


def sign_policy(network_key: Ed25519PrivateKey, document: bytes) -> SignedPolicy:
    """Sign a policy document; it must parse as a valid policy."""
    if len(document) > MAX_POLICY_BYTES:
        raise LichenError(ErrorCode.INVALID_REQUEST, "policy document is too large")
    parse_policy(document)
    signature = sign(network_key, POLICY_SIG_DOMAIN + document)
    return SignedPolicy(document=document, signature=signature, network_key=public_raw(network_key))


def verify_policy(blob: bytes, network_key: bytes) -> tuple[Policy, SignedPolicy]:
    """Decode a signed policy from the wire and check it was signed by ``network_key``."""
    if len(blob) > MAX_POLICY_BYTES + 1024:
        raise LichenError(ErrorCode.MANIFEST_INVALID, "signed policy is too large")
    try:
        signed = msgspec.msgpack.decode(blob, type=SignedPolicy)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise LichenError(ErrorCode.PROTOCOL_ERROR, "malformed signed policy") from None
    if signed.network_key != network_key:
        raise LichenError(ErrorCode.HANDSHAKE_FAILED, "policy signed by a different network key")
    if not verify(network_key, signed.signature, POLICY_SIG_DOMAIN + signed.document):
        raise LichenError(ErrorCode.HANDSHAKE_FAILED, "the network policy signature is invalid")
    return parse_policy(signed.document, source="network policy"), signed


def verify_public_json(body: dict[str, Any]) -> Policy:
    """Check a ``/privacy.json`` body: its signature and that its policy is its document."""
    document = str(body["document"]).encode("utf-8")
    key = base64.b64decode(body["network_key"])
    signature = base64.b64decode(body["signature"])
    if not verify(key, signature, POLICY_SIG_DOMAIN + document):
        raise LichenError(ErrorCode.HANDSHAKE_FAILED, "the network policy signature is invalid")
    return parse_policy(document)
