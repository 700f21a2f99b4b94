"""RequestRecord refuses values the request log must never hold."""

from __future__ import annotations

import dataclasses

import pytest

from lichen.storage import RequestRecord
from lichen.storage.tables import MODEL_NAME_MAX


def _record(**changes: object) -> RequestRecord:
    fields: dict[str, object] = {
        "created_ms": 1,
        "model": "smollm2-135m",
        "kind": "chat",
        "status": 200,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "ttft_ms": 1,
        "latency_ms": 1,
        "node_peer_id": None,
        "stream": False,
    }
    fields.update(changes)
    return RequestRecord(**fields)  # type: ignore[arg-type]


def test_record_is_frozen() -> None:
    record = _record()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.model = "other"  # type: ignore[misc]


def test_record_fields_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        RequestRecord(1, "m", "chat", 200, 1, 1, 1, 1, None, False)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": "embedding"},
        {"model": "x" * (MODEL_NAME_MAX + 1)},
        {"node_peer_id": "p" * 1000},
        {"prompt_tokens": -1},
        {"completion_tokens": -1},
        {"latency_ms": -1},
        {"ttft_ms": -1},
    ],
)
def test_record_rejects_invalid_values(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _record(**changes)
