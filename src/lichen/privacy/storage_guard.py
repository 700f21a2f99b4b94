"""Enforcement at the storage layer: no row of a forbidden data class is ever written.

:func:`install_guard` hooks a :class:`PolicyGuard` into an engine, so *every*
``INSERT`` or ``UPDATE`` issued through it (whichever repository issues it) is
checked against the table's data class (``TABLE_DATA_CLASS``) before it reaches
the database. A refused write raises ``LichenError(POLICY_FORBIDS)``; raised inside
``engine.begin()``, the whole transaction rolls back, so nothing is partially
written. Deletes are always allowed: removing data never breaks a policy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Insert, Update

from lichen.errors import ErrorCode, LichenError
from lichen.privacy.policy import DataClass, Location, Policy, data_class
from lichen.storage.tables import TABLE_DATA_CLASS

log = logging.getLogger(__name__)

# Tables that belong to the machinery, not to any data class.
UNGUARDED_TABLES = frozenset({"alembic_version"})

_TEXT_WRITE = re.compile(
    r"^\s*(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|REPLACE\s+INTO)\s+[\"`\[]?(\w+)", re.IGNORECASE
)


class PolicyGuard:
    """Answers "may this process store rows of this table?" from the policy."""

    def __init__(self, policy: Policy, locations: Iterable[Location]) -> None:
        self.policy = policy
        self.locations = frozenset(locations)

    def data_class_of(self, table: str) -> DataClass:
        value = TABLE_DATA_CLASS.get(table)
        if value is None:
            raise LichenError(
                ErrorCode.POLICY_FORBIDS,
                f"table {table!r} declares no data class; refusing to store its rows",
            )
        try:
            return data_class(value)
        except ValueError:
            raise LichenError(
                ErrorCode.POLICY_FORBIDS,
                f"table {table!r} declares the unknown data class {value!r}",
            ) from None

    def allows(self, cls: DataClass | str) -> bool:
        rule = self.policy.rule(cls)
        return rule.stored and bool(self.locations.intersection(rule.where))

    def check_table(self, table: str) -> None:
        if table in UNGUARDED_TABLES:
            return
        self.check(self.data_class_of(table), table=table)

    def check(self, cls: DataClass | str, *, table: str = "") -> None:
        """Raise ``POLICY_FORBIDS`` unless the policy lets this process store ``cls``."""
        if self.allows(cls):
            return
        where = "/".join(sorted(self.locations))
        log.warning(
            "policy %s refused a write of %s%s at %s",
            self.policy.name,
            cls,
            f" (table {table})" if table else "",
            where,
        )
        raise LichenError(
            ErrorCode.POLICY_FORBIDS,
            f"the network policy {self.policy.name!r} forbids storing {cls} at {where}",
        )


def install_guard(engine: AsyncEngine, guard: PolicyGuard) -> None:
    """Check every write issued through ``engine`` with ``guard`` (idempotent per engine)."""
    sync_engine = engine.sync_engine
    previous = getattr(sync_engine, "_lichen_guard", None)
    if previous is not None:
        previous.policy, previous.locations = guard.policy, guard.locations
        return

    def before_execute(
        _conn: Connection,
        clause: Any,
        _multiparams: Any,
        _params: Any,
        _options: Any,
    ) -> None:
        if isinstance(clause, Insert | Update):
            name = getattr(clause.table, "name", None)
            if isinstance(name, str):
                guard.check_table(name)

    def before_cursor_execute(
        _conn: Connection,
        _cursor: Any,
        statement: str,
        _parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        match = _TEXT_WRITE.match(statement)
        if match is not None:
            guard.check_table(match.group(1))

    event.listen(sync_engine, "before_execute", before_execute)
    event.listen(sync_engine, "before_cursor_execute", before_cursor_execute)
    sync_engine._lichen_guard = guard  # type: ignore[attr-defined]
