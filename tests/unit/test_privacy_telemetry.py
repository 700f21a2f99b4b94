"""Telemetry: opt-in, and only the counters the policy lists ever leave a node."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from lichen.errors import ErrorCode, LichenError
from lichen.privacy.node_side import NodePrivacy, parse_refusals
from lichen.privacy.policy import TELEMETRY_COUNTERS, load_preset
from lichen.privacy.telemetry import (
    TelemetryCounters,
    node_may_send,
    only_counters,
    set_telemetry_opt_in,
    telemetry_enabled,
    telemetry_opt_in,
)
from lichen.wire import codec
from lichen.wire.messages import Telemetry


def _wire_keys(msg: Telemetry) -> set[str]:
    """The keys that really travel: decode the frame's msgpack without the schema."""
    frame = msgspec.msgpack.decode(codec.encode(msg))
    return set(frame[1]) - {"t"}


def test_payload_contains_exactly_the_allowed_counters() -> None:
    clock = iter([100.0, 160.0]).__next__
    counters = TelemetryCounters(clock=clock)
    counters.job_finished(12)
    counters.job_finished(30)
    full = counters.payload(TELEMETRY_COUNTERS, tokens_per_s=41.234, models=["b", "a"])
    assert full == Telemetry(
        requests=2, tokens=42, tokens_per_s=41.23, models=["a", "b"], uptime_s=60
    )
    assert _wire_keys(full) == set(TELEMETRY_COUNTERS)

    clock2 = iter([0.0, 5.0]).__next__
    some = TelemetryCounters(clock=clock2).payload(
        ["requests", "uptime_s"], tokens_per_s=9, models=["m"]
    )
    assert _wire_keys(some) == {"requests", "uptime_s"}
    assert some.models is None and some.tokens is None


def test_the_message_type_has_no_room_for_content() -> None:
    assert set(Telemetry.__struct_fields__) == set(TELEMETRY_COUNTERS)


def test_only_counters_strips_what_a_node_should_not_have_sent() -> None:
    msg = Telemetry(requests=1, tokens=2, tokens_per_s=3.0, models=["x"], uptime_s=4)
    assert only_counters(msg, ["tokens"]) == Telemetry(tokens=2)


def test_opt_in_is_off_by_default_and_persisted(tmp_path: Path) -> None:
    assert telemetry_opt_in(tmp_path) is False
    assert telemetry_enabled(None, tmp_path) is False
    set_telemetry_opt_in(tmp_path, True)
    assert telemetry_opt_in(tmp_path) is True
    assert telemetry_enabled(None, tmp_path) is True
    assert telemetry_enabled(False, tmp_path) is False  # the env var / flag wins
    (tmp_path / "telemetry.json").write_text("{not json")
    assert telemetry_opt_in(tmp_path) is False


def test_node_sends_only_when_opted_in_and_the_network_accepts() -> None:
    private = load_preset("private")
    assert node_may_send(True, private)
    assert not node_may_send(False, private)
    assert not node_may_send(True, None)
    closed = private.model_copy(
        update={"telemetry": private.telemetry.model_copy(update={"opt_in": False})}
    )
    assert not node_may_send(True, closed)


def test_node_follows_the_saved_setting_live_unless_told_explicitly(tmp_path: Path) -> None:
    live = NodePrivacy(telemetry=None, settings_dir=tmp_path)
    live.policy = load_preset("private")
    assert not live.sends_telemetry
    set_telemetry_opt_in(tmp_path, True)  # e.g. the web UI's node page
    assert live.sends_telemetry
    forced_off = NodePrivacy(telemetry=False, settings_dir=tmp_path)
    forced_off.policy = load_preset("private")
    assert not forced_off.sends_telemetry


def test_refusals_and_unsigned_trackers() -> None:
    assert parse_refusals(" Open, dataset ,,") == {"open", "dataset"}
    assert NodePrivacy().accept(b"", b"\x00" * 32) is None  # no policy: accepted, warned
    with pytest.raises(LichenError) as caught:
        NodePrivacy(refuse=["unsigned"]).accept(b"", b"\x00" * 32)
    assert caught.value.code is ErrorCode.POLICY_FORBIDS
