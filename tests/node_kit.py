"""Node connections with no link behind them, for pure tests of scheduling, routing
decisions and the views that rank or show nodes: nothing is ever sent or received."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.identity.certs import issue_device_certificate, verify_device_certificate
from lichen.identity.signing import generate_key, peer_id, public_raw
from lichen.tracker.connection import NodeConnection
from lichen.transport.handshake import Peer
from lichen.wire.messages import Hardware, ManifestBody, Message, ModelInfo


class NoLink:
    """A link nothing is ever sent on (the code under test must stay pure)."""

    remote = "test"

    async def send(self, msg: Message) -> None:
        raise AssertionError("must not send")

    async def recv(self) -> Message:
        raise AssertionError("must not receive")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        return None


def offline_node(
    name: str,
    models: Mapping[str, int] | Sequence[ModelInfo],
    *,
    account: Ed25519PrivateKey | None = None,
    **state: object,
) -> NodeConnection:
    """A connected-looking node named ``name`` serving ``models`` (name -> slots, or
    whole ModelInfo entries), certified by ``account`` (default: an owner of its own),
    its ``state`` fields set from ``state``."""
    device = generate_key()
    owner = account or generate_key()
    cert = verify_device_certificate(
        issue_device_certificate(owner, public_raw(device), name=name, now_ms=1),
        now_ms=2,
    )
    pid = peer_id(public_raw(device))
    infos = (
        [ModelInfo(name=m, sha256="", engine="fake", slots=s) for m, s in models.items()]
        if isinstance(models, Mapping)
        else list(models)
    )
    manifest = ManifestBody(name=name, peer_id=pid, hardware=Hardware(), models=infos)
    conn = NodeConnection(NoLink(), Peer(peer_id=pid, certificate=cert, trust="t"), manifest)
    for key, value in state.items():
        setattr(conn.state, key, value)
    return conn
