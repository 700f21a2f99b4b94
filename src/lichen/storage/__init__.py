"""Persistence: async engines, the schema, migrations and typed repositories."""

from __future__ import annotations

from lichen.storage.engine import create_engine, migrate
from lichen.storage.repositories import RequestLogRepository, RequestRecord, RequestStats
from lichen.storage.tables import TABLE_DATA_CLASS

__all__ = [
    "TABLE_DATA_CLASS",
    "RequestLogRepository",
    "RequestRecord",
    "RequestStats",
    "create_engine",
    "migrate",
]
