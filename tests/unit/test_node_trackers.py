"""A node's trackers: remembered from the invite in join.json, dialled in turn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lichen.errors import ErrorCode, LichenError
from lichen.identity.invites import create_invite
from lichen.identity.signing import generate_key, public_raw
from lichen.node.join import JOIN_FILE, resolve_join
from lichen.node.trackers import TrackerRotation, display_url

NOW = 1_800_000_000_000
T1 = "ws://t1.example.org:7000/v1/node/connect"
T2 = "wss://t2.example.org/v1/node/connect"
T3 = "ws://t3.example.org:7000/v1/node/connect"


# --- join.json ------------------------------------------------------------------------------


def test_join_remembers_every_tracker_of_the_invite(tmp_path: Path) -> None:
    network = generate_key()
    token = create_invite(
        network,
        tracker_url="http://t1.example.org:7000",  # dialled as ws://…/v1/node/connect
        other_tracker_urls=["https://t2.example.org/", T1, "ws://t3.example.org:7000"],
        roles=["node"],
        now_ms=NOW,
    )
    target = resolve_join(tmp_path, token)
    assert target.tracker_url == T1
    assert target.other_tracker_urls == (T2, T3)  # T1 twice (once as http://) is dialled once
    assert target.tracker_urls == (T1, T2, T3)
    assert target.network_key == public_raw(network) and target.invite == token
    again = resolve_join(tmp_path, None)  # a later start needs no token
    assert again.tracker_urls == (T1, T2, T3) and again.network_key == public_raw(network)
    assert again.invite == ""


def test_a_one_tracker_join_is_written_as_before(tmp_path: Path) -> None:
    token = create_invite(generate_key(), tracker_url=T1, roles=["node"], now_ms=NOW)
    resolve_join(tmp_path, token)
    record = json.loads((tmp_path / JOIN_FILE).read_text())
    assert set(record) == {"tracker_url", "network_key", "joined_ms"}


def test_an_old_join_file_still_loads(tmp_path: Path) -> None:
    key = public_raw(generate_key())
    old = {"tracker_url": T1, "network_key": key.hex(), "joined_ms": NOW}
    (tmp_path / JOIN_FILE).write_text(json.dumps(old))
    target = resolve_join(tmp_path, None)
    assert (target.tracker_url, target.other_tracker_urls, target.network_key) == (T1, (), key)


@pytest.mark.parametrize("others", ["ws://t2", [1], [None], {"a": "ws://t2"}, [["ws://t2"]]])
def test_a_damaged_tracker_list_in_join_json_is_a_typed_error(
    tmp_path: Path, others: object
) -> None:
    record = {"tracker_url": T1, "network_key": "00" * 32, "other_tracker_urls": others}
    (tmp_path / JOIN_FILE).write_text(json.dumps(record))
    with pytest.raises(LichenError) as excinfo:
        resolve_join(tmp_path, None)
    assert excinfo.value.code is ErrorCode.INTERNAL and "join again" in excinfo.value.message


# --- rotation -------------------------------------------------------------------------------


def test_rotation_tries_each_tracker_before_backing_off() -> None:
    trackers = TrackerRotation([T1, T2, T3])
    assert trackers.current == T1
    assert trackers.failed() is False and trackers.current == T2
    assert trackers.failed() is False and trackers.current == T3
    assert trackers.failed() is True and trackers.current == T1  # a full round: back off
    assert trackers.failed() is False and trackers.current == T2  # a new round


def test_a_joined_tracker_starts_a_new_round() -> None:
    trackers = TrackerRotation([T1, T2])
    assert trackers.failed() is False  # T1 down
    trackers.joined()  # on T2
    assert trackers.failed() is False and trackers.current == T1  # T2 lost: T1 at once
    assert trackers.failed() is True and trackers.current == T2  # both down: back off


def test_one_tracker_backs_off_after_every_failure() -> None:
    trackers = TrackerRotation([T1])
    for _ in range(3):
        assert trackers.failed() is True and trackers.current == T1
    trackers.joined()
    assert trackers.failed() is True


def test_rotation_drops_duplicates_and_needs_a_tracker() -> None:
    assert TrackerRotation([T1, T2, T1, ""]).urls == [T1, T2]
    with pytest.raises(ValueError):
        TrackerRotation([""])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (T1, T1),
        ("wss://user:secret@t2.example.org/v1/node/connect?token=abc#x", T2),
        ("ws://[::1]:7000/v1/node/connect", "ws://[::1]:7000/v1/node/connect"),
        ("ws://t1.example.org:99999/x", "<unparsable URL>"),
    ],
)
def test_logged_tracker_urls_carry_no_secrets(url: str, shown: str) -> None:
    assert display_url(url) == shown
