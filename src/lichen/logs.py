"""Logging set-up shared by every command.

Log lines carry metadata only; no module logs prompt or completion text, and
llama.cpp's own logging is switched off by the engine.
"""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "websockets", "aiosqlite", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
