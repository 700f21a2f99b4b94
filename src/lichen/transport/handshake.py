"""The mutual handshake on a fresh link (docs/architecture.md section 3).

1. node -> tracker  ``Hello``: device certificate, a nonce, maybe an invite.
2. tracker -> node  ``Challenge``: the network key's signature over both nonces.
3. node -> tracker  ``Auth``: the device key's signature over the tracker nonce and
   a timestamp.
4. tracker -> node  ``Welcome`` or ``Error``.

Unknown, revoked, expired, replayed or forged identities are refused here, before
any job can be sent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen import __version__
from lichen.clock import now_ms
from lichen.errors import ErrorCode, LichenError, parse_code
from lichen.identity import handshake_crypto as hs
from lichen.identity.certs import DeviceCertificate, verify_device_certificate
from lichen.identity.signing import peer_id, public_raw
from lichen.transport.link import Link, send_error
from lichen.wire.messages import Auth, Challenge, Error, Hello, Welcome

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0

T = TypeVar("T")


@dataclass(frozen=True)
class Peer:
    """An authenticated node."""

    peer_id: str
    certificate: DeviceCertificate
    trust: str  # trust level granted by admission


class Admission(Protocol):
    """Decides whether an authenticated device may join (membership, invites)."""

    async def admit(self, cert: DeviceCertificate, invite: str, remote: str) -> str:
        """Return the granted trust level, or raise LichenError."""
        ...


async def _expect(link: Link, kind: type[T]) -> T:
    async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
        msg = await link.recv()
    if isinstance(msg, Error):
        raise LichenError(parse_code(msg.code, unknown=ErrorCode.HANDSHAKE_FAILED), msg.message)
    if not isinstance(msg, kind):
        raise LichenError(
            ErrorCode.PROTOCOL_ERROR, f"expected {kind.__name__}, got {type(msg).__name__}"
        )
    return msg


async def client_handshake(
    link: Link,
    *,
    device_key: Ed25519PrivateKey,
    device_certificate: bytes,
    expected_network_key: bytes | None,
    invite: str = "",
) -> tuple[Welcome, bytes]:
    """Run the node's side; return the Welcome and the tracker's network key."""
    node_nonce = hs.new_nonce()
    await link.send(
        Hello(
            peer_id=peer_id(public_raw(device_key)),
            device_cert=device_certificate,
            node_nonce=node_nonce,
            invite=invite,
            software=f"lichen/{__version__}",
        )
    )
    challenge = await _expect(link, Challenge)
    if expected_network_key is not None and challenge.network_key != expected_network_key:
        raise LichenError(ErrorCode.HANDSHAKE_FAILED, "tracker presented a different network key")
    if not hs.verify_tracker_proof(
        challenge.network_key, challenge.network_sig, node_nonce, challenge.tracker_nonce
    ):
        raise LichenError(ErrorCode.HANDSHAKE_FAILED, "tracker failed to prove the network key")
    stamp = now_ms()
    await link.send(
        Auth(timestamp_ms=stamp, signature=hs.node_auth(device_key, challenge.tracker_nonce, stamp))
    )
    welcome = await _expect(link, Welcome)
    return welcome, challenge.network_key


async def server_handshake(
    link: Link,
    *,
    network_key: Ed25519PrivateKey,
    admission: Admission,
    replay_guard: hs.ReplayGuard,
    heartbeat_s: float,
    policy: bytes = b"",
    clock: Callable[[], int] = now_ms,
) -> Peer:
    """Run the tracker's side; return the authenticated peer or raise (after telling it)."""
    try:
        hello = await _expect(link, Hello)
        cert = verify_device_certificate(hello.device_cert, now_ms=clock())
        if peer_id(cert.device_key) != hello.peer_id:
            raise LichenError(ErrorCode.HANDSHAKE_FAILED, "peer id does not match the certificate")
        tracker_nonce = hs.new_nonce()
        await link.send(
            Challenge(
                network_key=public_raw(network_key),
                network_sig=hs.tracker_proof(network_key, hello.node_nonce, tracker_nonce),
                tracker_nonce=tracker_nonce,
            )
        )
        auth = await _expect(link, Auth)
        now = clock()
        hs.verify_node_auth(
            cert.device_key, auth.signature, tracker_nonce, auth.timestamp_ms, now_ms=now
        )
        replay_guard.check_and_remember(auth.signature, now)
        trust = await admission.admit(cert, hello.invite, link.remote)
        await link.send(
            Welcome(session_id=uuid.uuid4().hex, heartbeat_s=heartbeat_s, policy=policy)
        )
        return Peer(peer_id=hello.peer_id, certificate=cert, trust=trust)
    except TimeoutError as exc:
        error = LichenError(ErrorCode.HANDSHAKE_FAILED, "handshake timed out")
        await send_error(link, error)
        raise error from exc
    except LichenError as error:
        # A pending node asks again every few seconds: the tracker's admission logs it once.
        level = logging.DEBUG if error.code is ErrorCode.MEMBERSHIP_PENDING else logging.WARNING
        log.log(
            level, "refused node from %s: %s (%s)", link.remote, error.code.value, error.message
        )
        await send_error(link, error)
        raise
