"""Account roles: ``user`` (everyone) or ``operator`` (may use the admin API).

An operator is an account, so its credentials are the ordinary ones: an API key of
an operator account with the ``account`` scope is an *operator key*. Inference-only
keys (scope ``inference``) of the same account are not: a key embedded in an app
cannot administer the network. The role is read from the database on every admin
request (no cache), so ``lichen operator revoke`` takes effect on the next request,
on every gateway that shares the database.
"""

from __future__ import annotations

from typing import Literal, cast

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.errors import ErrorCode, LichenError
from lichen.storage.accounts_tables import ACCOUNT_ROLES, ROLE_OPERATOR, ROLE_USER, AccountRow

Role = Literal["user", "operator"]

__all__ = ["ACCOUNT_ROLES", "ROLE_OPERATOR", "ROLE_USER", "AccountRoles", "Role"]


class AccountRoles:
    """Reads and sets the ``role`` column of accounts."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def role(self, account_id: str) -> Role | None:
        """The role of an active account, or None (unknown or deleted)."""
        query = select(AccountRow.role).where(
            AccountRow.id == account_id, AccountRow.deleted_ms.is_(None)
        )
        async with self._engine.connect() as connection:
            value = await connection.scalar(query)
        return None if value is None else cast(Role, value)

    async def is_operator(self, account_id: str) -> bool:
        return await self.role(account_id) == ROLE_OPERATOR

    async def set_role(self, account_id: str, role: Role) -> None:
        """Make an active account a ``user`` or an ``operator`` (NOT_FOUND otherwise)."""
        if role not in ACCOUNT_ROLES:
            raise LichenError(ErrorCode.INVALID_REQUEST, f"no role {role!r}", param="role")
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(AccountRow)
                .where(AccountRow.id == account_id, AccountRow.deleted_ms.is_(None))
                .values(role=role)
            )
        if result.rowcount != 1:
            raise LichenError(ErrorCode.NOT_FOUND, "no such active account", param="account")

    async def operators(self) -> list[tuple[str, str]]:
        """(account id, username) of every active operator, by username."""
        query = (
            select(AccountRow.id, AccountRow.username)
            .where(AccountRow.role == ROLE_OPERATOR, AccountRow.deleted_ms.is_(None))
            .order_by(AccountRow.username)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [(row.id, row.username) for row in rows]
