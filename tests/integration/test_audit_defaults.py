"""Audits by default: on for a public network's tracker, off for a private one (and so for
``lichen up``), ``LICHEN_AUDITS`` decides when set; reference models installed later are
found without a restart."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from lichen.audit.rescoring import LlamaScorer, ReferenceModel
from lichen.audit.service import audits_on
from lichen.config import Settings, load_settings
from lichen.identity.store import load_identity
from lichen.roles.tracker import TrackerStack, tracker_stack


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),  # private (the default, and `lichen up`): the owner's own machines
        ({"LICHEN_NETWORK_MODE": "public"}, True),  # strangers' nodes: check them
        ({"LICHEN_NETWORK_MODE": "public", "LICHEN_AUDITS": "false"}, False),
        ({"LICHEN_AUDITS": "true"}, True),
    ],
)
def test_audits_default_to_the_networks_openness(
    env: dict[str, str],
    expected: bool,
    lichen_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert audits_on(load_settings()) is expected


def test_an_invalid_audits_value_is_refused(
    lichen_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LICHEN_AUDITS", "sometimes")
    with pytest.raises(ValidationError, match="audits"):
        load_settings()


@contextlib.asynccontextmanager
async def _tracker(root: Path, **extra: object) -> AsyncIterator[TrackerStack]:
    settings = Settings(data_dir=root / "tracker", host="127.0.0.1", port=0, **extra)  # type: ignore[arg-type]
    async with tracker_stack(settings, load_identity(settings.data_dir)) as stack:
        yield stack


async def _audits_enabled(stack: TrackerStack) -> bool:
    token = (stack.settings.data_dir / "operator.token").read_text().strip()
    async with httpx.AsyncClient(base_url=stack.url, trust_env=False) as client:
        response = await client.get(
            "/v1/network/audits", headers={"authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200, response.text
    enabled: bool = response.json()["enabled"]
    return enabled


async def test_a_public_tracker_audits_and_a_private_one_does_not(tmp_path: Path) -> None:
    async with _tracker(tmp_path / "public", network_mode="public") as stack:
        assert stack.audits is not None
        assert stack.scheduler.blocked is not None  # quarantine keeps nodes out
        assert await _audits_enabled(stack)
        # nothing loaded at start: the reference engine loads at the first probe
        assert stack.audits.scorer.loaded() == []
    async with _tracker(tmp_path / "opt-out", network_mode="public", audits=False) as stack:
        assert stack.audits is None
    async with _tracker(tmp_path / "private") as stack:
        assert stack.audits is None and stack.scheduler.blocked is None


def test_reference_models_installed_later_are_found(tmp_path: Path) -> None:
    now = [0.0]
    installed: list[ReferenceModel] = []
    calls: list[float] = []

    def discover() -> list[ReferenceModel]:
        calls.append(now[0])
        return list(installed)

    scorer = LlamaScorer([], discover=discover, discover_every_s=60.0, clock=lambda: now[0])
    assert not scorer.serves("m", "a" * 64)
    assert calls == []  # at most once a minute, not on every question
    installed.append(ReferenceModel("m", tmp_path / "m.gguf", "a" * 64))
    now[0] = 61.0
    assert scorer.serves("m", "a" * 64) and not scorer.serves("m", "b" * 64)
    assert scorer.model_names() == ["m"] and calls == [61.0]
    assert not scorer.serves("other", "")
    assert calls == [61.0]  # the next look is a minute later
