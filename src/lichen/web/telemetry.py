"""The operator's telemetry switch: off unless the operator turns it on.

``FileTelemetrySetting`` is the privacy package's persisted opt-in
(``<data_dir>/telemetry.json``), the same file the node reads when it starts.
Anything with the same two methods can stand in for it through
:class:`TelemetrySetting`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from lichen.privacy.telemetry import set_telemetry_opt_in, telemetry_opt_in


class TelemetrySetting(Protocol):
    def enabled(self) -> bool: ...

    def set_enabled(self, value: bool) -> None: ...


class FileTelemetrySetting:
    """The opt-in saved under ``data_dir``; missing or unreadable means off."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def enabled(self) -> bool:
        return telemetry_opt_in(self.data_dir)

    def set_enabled(self, value: bool) -> None:
        set_telemetry_opt_in(self.data_dir, value)
