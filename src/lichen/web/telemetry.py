"""The operator's telemetry switch: off unless the operator turns it on.

``FileTelemetrySetting`` keeps the choice in a small JSON file under the data
dir. Anything with the same two methods (the privacy package's setting, say)
can stand in for it through :class:`TelemetrySetting`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

SETTING_FILE = "telemetry.json"


class TelemetrySetting(Protocol):
    def enabled(self) -> bool: ...

    def set_enabled(self, value: bool) -> None: ...


class FileTelemetrySetting:
    """``<data_dir>/telemetry.json`` holding ``{"enabled": bool}``; missing means off."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / SETTING_FILE

    def enabled(self) -> bool:
        try:
            value = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            log.warning("unreadable telemetry setting in %s; treating it as off", self.path)
            return False
        return isinstance(value, dict) and value.get("enabled") is True

    def set_enabled(self, value: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_suffix(".tmp")
        temp.write_text(json.dumps({"enabled": bool(value)}) + "\n", encoding="utf-8")
        os.replace(temp, self.path)
        log.info("telemetry %s by the operator", "enabled" if value else "disabled")
