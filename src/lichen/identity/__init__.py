"""Identity: Ed25519 keys, device certificates, invites and the handshake crypto.

An account key per person or org certifies a device key per node; a network
key per tracker operator signs invites and proves the tracker in the
handshake; a peer id derives from the device public key. Everything here
is pure except :mod:`~lichen.identity.keys` and :mod:`~lichen.identity.store`,
which own the files under ``<data dir>/keys``.
"""

from __future__ import annotations

from lichen.identity.certs import (
    DeviceCertificate,
    issue_device_certificate,
    verify_device_certificate,
)
from lichen.identity.handshake_crypto import (
    NONCE_SIZE,
    ReplayGuard,
    new_nonce,
    node_auth,
    tracker_proof,
    verify_node_auth,
    verify_tracker_proof,
)
from lichen.identity.invites import Invite, check_invite, create_invite, parse_invite
from lichen.identity.keys import load_key, load_or_create_key
from lichen.identity.signing import (
    generate_key,
    is_peer_id,
    peer_id,
    public_raw,
    sign,
    verify,
)
from lichen.identity.store import Identity, load_identity

__all__ = [
    "NONCE_SIZE",
    "DeviceCertificate",
    "Identity",
    "Invite",
    "ReplayGuard",
    "check_invite",
    "create_invite",
    "generate_key",
    "is_peer_id",
    "issue_device_certificate",
    "load_identity",
    "load_key",
    "load_or_create_key",
    "new_nonce",
    "node_auth",
    "parse_invite",
    "peer_id",
    "public_raw",
    "sign",
    "tracker_proof",
    "verify",
    "verify_device_certificate",
    "verify_node_auth",
    "verify_tracker_proof",
]
