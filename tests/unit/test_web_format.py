"""Small pure helpers of the web UI: numbers, durations, hardware, telemetry text."""

from __future__ import annotations

from lichen.privacy.document import PolicyDocument, PolicySection
from lichen.web.network_view import hardware_text
from lichen.web.pages import TELEMETRY_HELP, telemetry_help
from lichen.web.policy_view import NeutralPolicy
from lichen.web.templating import datetime_ms, duration, percent, thousands
from lichen.wire.messages import Hardware


def test_duration_uses_the_two_largest_units() -> None:
    assert duration(0) == "0 s"
    assert duration(59.9) == "59 s"
    assert duration(61) == "1 min 1 s"
    assert duration(3 * 3600 + 5 * 60 + 7) == "3 h 5 min"
    assert duration(2 * 86_400 + 3 * 3600 + 59) == "2 d 3 h"
    assert duration(-5) == "0 s"


def test_numbers_and_times() -> None:
    assert thousands(1234567) == "1\u202f234\u202f567"
    assert percent(0.915) == "92%"
    assert datetime_ms(0) == "" and datetime_ms(None) == ""
    assert datetime_ms(1_700_000_000_000) == "2023-11-14 22:13 UTC"


def test_hardware_text() -> None:
    assert hardware_text(Hardware()) == "unknown"
    assert hardware_text(Hardware(cpu="x", cores=8, ram_mb=16384, gpu="RTX 4090")) == (
        "8 cores · 16 GiB · RTX 4090"
    )


class _Documented(NeutralPolicy):
    def document(self) -> PolicyDocument | None:
        return PolicyDocument(
            "p", [PolicySection("In short"), PolicySection("Telemetry", items=["Counters only."])]
        )


def test_telemetry_help_comes_from_the_policy_when_it_says_something() -> None:
    assert telemetry_help(NeutralPolicy()) == TELEMETRY_HELP
    assert telemetry_help(_Documented()) == "Counters only."
