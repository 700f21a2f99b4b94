"""The gateway's directory against a recording bus: syncs, refusals, re-announcements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lichen.cluster.directory import Directory
from lichen.cluster.messages import BusMessage, NodeDown, NodeUp, Subjects, Sync, TrackerBeat
from lichen.identity.store import load_identity
from lichen.wire import codec
from lichen.wire.manifest import sign_manifest
from lichen.wire.messages import Hardware, ModelInfo

pytestmark = pytest.mark.asyncio


class RecordingBus:
    """Publishes go to a list; nothing is delivered."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, BusMessage]] = []

    async def publish(self, subject: str, msg: BusMessage) -> bool:
        self.sent.append((subject, msg))
        return True

    async def subscribe(self, subject: str, handler: Any) -> None:
        pass

    def syncs(self) -> list[Sync]:
        return [m for _, m in self.sent if isinstance(m, Sync)]


def _node_up(root: Path, name: str, tracker: str = "t1") -> NodeUp:
    identity = load_identity(root / name, node_name=name)
    manifest = sign_manifest(
        identity.device_key,
        name=name,
        peer_id=identity.peer_id,
        models=[ModelInfo(name="m", sha256="0" * 64, engine="fake", slots=1)],
        engines=["fake"],
        hardware=Hardware(cpu="test", cores=1, ram_mb=1024),
    )
    return NodeUp(
        tracker=tracker,
        peer_id=identity.peer_id,
        certificate=identity.device_certificate,
        trust="member",
        manifest=codec.encode(manifest),
    )


def _directory() -> tuple[Directory, RecordingBus]:
    bus = RecordingBus()
    directory = Directory(bus, Subjects("lichen.test"), beat_s=1.0)  # type: ignore[arg-type]
    return directory, bus


async def test_a_count_that_disagrees_asks_once_then_backs_off() -> None:
    directory, bus = _directory()
    beat = TrackerBeat(tracker="t1", nodes=3, every_s=1.0)
    for _ in range(20):  # twenty beats disagreeing at once: one sync until the backoff passes
        await directory._on_directory(beat)
    syncs = bus.syncs()
    assert len(syncs) == 1
    assert syncs[0].tracker == "t1" and syncs[0].gateway == directory.gateway_id
    assert all(subject == "lichen.test.sync" for subject, _ in bus.sent)


async def test_a_refused_node_still_counts_so_the_tracker_is_not_asked_forever(
    tmp_path: Path,
) -> None:
    directory, bus = _directory()
    good = _node_up(tmp_path, "good")
    forged = good.__class__(
        tracker="t1",
        peer_id=_node_up(tmp_path, "other").peer_id,  # not the certificate's key
        certificate=good.certificate,
        trust="member",
        manifest=good.manifest,
    )
    try:
        await directory._on_directory(good)
        await directory._on_directory(forged)
        assert len(directory.registry) == 1
        await directory._on_directory(TrackerBeat(tracker="t1", nodes=2, every_s=1.0))
        assert bus.syncs() == []  # two announced, one held and one refused: it agrees
        await directory._on_directory(NodeDown(tracker="t1", peer_id=forged.peer_id))
        await directory._on_directory(TrackerBeat(tracker="t1", nodes=1, every_s=1.0))
        assert bus.syncs() == []
    finally:
        await directory.stop()


async def test_a_byte_identical_announcement_keeps_the_connection(tmp_path: Path) -> None:
    directory, _bus = _directory()
    up = _node_up(tmp_path, "n1")
    try:
        await directory._on_directory(up)
        first = directory.registry.get(up.peer_id)
        await directory._on_own(up)  # the answer to a sync
        assert directory.registry.get(up.peer_id) is first
        moved = up.__class__(
            tracker="t2",
            peer_id=up.peer_id,
            certificate=up.certificate,
            trust=up.trust,
            manifest=up.manifest,
        )
        await directory._on_directory(moved)  # the node moved to tracker t2
        second = directory.registry.get(up.peer_id)
        assert second is not None and second is not first
        assert first is not None and first.closed  # its jobs failed over
        await directory._on_directory(NodeDown(tracker="t1", peer_id=up.peer_id))  # stale
        assert directory.registry.get(up.peer_id) is second
    finally:
        await directory.stop()
