"""What travels on the cluster bus: typed messages and the subjects they use.

Node frames (:mod:`lichen.wire.messages`) ride inside as encoded bytes, exactly as
the node sent them or as the gateway wrote them, so nothing on the way can forge a
node's signed manifest or receipt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import msgspec

from lichen.errors import ErrorCode, LichenError

MAX_BUS_BYTES = 5 * 1024 * 1024  # one node frame (4 MiB) plus the envelope

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


class _Bus(msgspec.Struct, tag_field="t", frozen=True, forbid_unknown_fields=True):
    pass


class NodeUp(_Bus, tag="up", frozen=True):
    """tracker -> directory: a node is connected here (sent again on request)."""

    tracker: Id
    peer_id: Id
    certificate: bytes  # the node's device certificate, as it presented it
    trust: Id  # the trust level membership granted it
    manifest: bytes  # the node's signed Manifest frame (codec-encoded)


class NodeFrame(_Bus, tag="frame", frozen=True):
    """tracker -> directory: a node's Heartbeat or re-signed Manifest frame."""

    tracker: Id
    peer_id: Id
    frame: bytes


class NodeDown(_Bus, tag="down", frozen=True):
    """tracker -> directory: a node left this tracker."""

    tracker: Id
    peer_id: Id


class TrackerBeat(_Bus, tag="tbeat", frozen=True):
    """tracker -> directory, every ``every_s``: alive, with this many nodes."""

    tracker: Id
    nodes: Annotated[int, msgspec.Meta(ge=0)]
    every_s: Annotated[float, msgspec.Meta(gt=0, le=60)]


class Sync(_Bus, tag="sync", frozen=True):
    """gateway -> trackers: announce your nodes to me (``tracker`` empty: every tracker).

    The answer goes to the asking gateway's own subject, not to every gateway."""

    gateway: Id
    tracker: str = ""


class GatewayBeat(_Bus, tag="gbeat", frozen=True):
    """gateway -> trackers, every ``every_s``: alive (its jobs are cancelled when it stops)."""

    gateway: Id
    every_s: Annotated[float, msgspec.Meta(gt=0, le=60)]


class ToNode(_Bus, tag="to", frozen=True):
    """gateway -> tracker: a frame for one of the tracker's nodes (job start, credit, cancel)."""

    gateway: Id
    peer_id: Id
    frame: bytes


class FromNode(_Bus, tag="from", frozen=True):
    """tracker -> gateway: a node's frame about one of the gateway's jobs."""

    tracker: Id
    peer_id: Id
    frame: bytes


BusMessage = NodeUp | NodeFrame | NodeDown | TrackerBeat | Sync | GatewayBeat | ToNode | FromNode

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(BusMessage)


def encode(msg: BusMessage) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes) -> BusMessage:
    """One bus message; a typed PROTOCOL_ERROR for anything malformed or oversized."""
    if len(data) > MAX_BUS_BYTES:
        raise LichenError(ErrorCode.FRAME_TOO_LARGE, f"bus message of {len(data)} bytes")
    try:
        return _decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise LichenError(ErrorCode.PROTOCOL_ERROR, f"malformed bus message: {exc}") from exc


@dataclass(frozen=True)
class Subjects:
    """NATS subjects of one network (several networks may share a NATS server)."""

    namespace: str  # "lichen.<first 16 hex digits of the network key>"

    @classmethod
    def for_network(cls, network_public: bytes) -> Subjects:
        return cls(f"lichen.{network_public.hex()[:16]}")

    @property
    def directory(self) -> str:
        """Node ups, frames and downs; tracker beats; sync requests."""
        return f"{self.namespace}.dir"

    @property
    def gateway_beats(self) -> str:
        return f"{self.namespace}.gwbeat"

    @property
    def syncs(self) -> str:
        """Gateways asking trackers for their nodes (trackers hear nothing else broadcast)."""
        return f"{self.namespace}.sync"

    def tracker(self, tracker_id: str) -> str:
        """Frames for the nodes connected to ``tracker_id``."""
        return f"{self.namespace}.trk.{tracker_id}"

    def gateway(self, gateway_id: str) -> str:
        """Node frames about ``gateway_id``'s jobs, and the answers to its syncs."""
        return f"{self.namespace}.gw.{gateway_id}"
