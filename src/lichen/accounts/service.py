"""Accounts: sign up, authenticate, soft delete with a grace period, restore, purge.

Deletion is soft for :data:`DELETION_GRACE_S` (30 days): the account stops
working at once (its sessions and keys are revoked, logins are refused) but can
be restored with its password; after the grace period the sweeper purges every
row that belongs to it. The ledger keeps its journal lines (they name only the
opaque ``user:<id>``), because the journal is append-only.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lichen.accounts.passwords import PASSWORD_MAX, PASSWORD_MIN, Passwords
from lichen.clock import Clock, system_clock, to_ms
from lichen.errors import ErrorCode, LichenError
from lichen.ledger.names import user_account
from lichen.storage.accounts_tables import (
    AccountRow,
    AccountUsageRow,
    ApiKeyRow,
    SessionFamilyRow,
    SessionTokenRow,
)

log = logging.getLogger(__name__)

DELETION_GRACE_S = 30 * 86_400
USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,31}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    id: str
    username: str
    email: str
    created_ms: int
    deleted_ms: int | None = None
    purge_after_ms: int | None = None

    @property
    def active(self) -> bool:
        return self.deleted_ms is None

    @property
    def ledger_account(self) -> str:
        return user_account(self.id)

    def public(self) -> dict[str, Any]:
        """What the account's owner may see about it (never the password hash)."""
        return {
            "id": self.id,
            "username": self.username,
            "email": self.email,
            "created_ms": self.created_ms,
            "deleted_ms": self.deleted_ms,
            "purge_after_ms": self.purge_after_ms,
        }


_COLUMNS = (
    AccountRow.id,
    AccountRow.username,
    AccountRow.email,
    AccountRow.created_ms,
    AccountRow.deleted_ms,
    AccountRow.purge_after_ms,
)


def _account(row: Any) -> Account:
    return Account(
        id=row.id,
        username=row.username,
        email=row.email,
        created_ms=row.created_ms,
        deleted_ms=row.deleted_ms,
        purge_after_ms=row.purge_after_ms,
    )


def normalize_username(username: str) -> str:
    return username.strip().lower()


def _invalid(message: str, param: str) -> LichenError:
    return LichenError(ErrorCode.INVALID_REQUEST, message, param=param)


def _bad_login() -> LichenError:
    return LichenError(ErrorCode.INVALID_CREDENTIALS, "wrong username, email or password")


class AccountService:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        passwords: Passwords | None = None,
        clock: Clock = system_clock,
        grace_s: int = DELETION_GRACE_S,
    ) -> None:
        self._engine = engine
        self._passwords = passwords or Passwords()
        self._clock = clock
        self.grace_s = grace_s

    async def signup(self, username: str, email: str, password: str) -> Account:
        """A new account with no credits (new identities mint nothing)."""
        username, email = normalize_username(username), email.strip().lower()
        if not USERNAME.match(username):
            raise _invalid(
                "a username is 3-32 characters: letters, digits, '.', '_' or '-'", "username"
            )
        if len(email) > 254 or not EMAIL.match(email):
            raise _invalid("that is not an email address", "email")
        if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
            raise _invalid(
                f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters", "password"
            )
        account = Account(
            id=uuid.uuid4().hex, username=username, email=email, created_ms=self._now_ms()
        )
        hashed = await self._passwords.hash(password)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(AccountRow).values(
                        id=account.id,
                        username=username,
                        email=email,
                        password_hash=hashed,
                        created_ms=account.created_ms,
                    )
                )
        except IntegrityError:
            raise LichenError(
                ErrorCode.CONFLICT, "that username or email is already registered"
            ) from None
        log.info("account %s created", account.id)
        return account

    async def authenticate(self, login: str, password: str) -> Account:
        """The active account for a username or email and its password."""
        row = await self._row_for_login(login)
        ok, rehash = await self._passwords.verify(row.password_hash if row else None, password)
        if row is None or not ok:
            raise _bad_login()
        account = _account(row)
        if not account.active:
            raise LichenError(
                ErrorCode.INVALID_CREDENTIALS,
                "this account is scheduled for deletion; restore it to sign in again",
            )
        if rehash:
            await self._set_password_hash(account.id, await self._passwords.hash(password))
        return account

    async def _row_for_login(self, login: str) -> Any:
        login = login.strip().lower()
        if not login or len(login) > 254:
            return None
        query = select(*_COLUMNS, AccountRow.password_hash).where(
            or_(AccountRow.username == login, AccountRow.email == login)
        )
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).first()

    async def _set_password_hash(self, account_id: str, hashed: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(AccountRow).where(AccountRow.id == account_id).values(password_hash=hashed)
            )

    async def change_password(self, account_id: str, old: str, new: str) -> None:
        account = await self.get(account_id)
        if account is None or not account.active:
            raise _bad_login()
        await self.authenticate(account.username, old)
        if not PASSWORD_MIN <= len(new) <= PASSWORD_MAX:
            raise _invalid(
                f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters", "password"
            )
        await self._set_password_hash(account_id, await self._passwords.hash(new))

    async def get(self, account_id: str) -> Account | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(AccountRow.id == account_id))).first()
        return None if row is None else _account(row)

    async def by_username(self, username: str) -> Account | None:
        query = select(*_COLUMNS).where(AccountRow.username == normalize_username(username))
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _account(row)

    async def delete(self, account_id: str) -> Account:
        """Soft delete: stop the account now, purge it after the grace period."""
        now = self._now_ms()
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(AccountRow)
                .where(AccountRow.id == account_id, AccountRow.deleted_ms.is_(None))
                .values(deleted_ms=now, purge_after_ms=now + self.grace_s * 1000)
            )
            if result.rowcount == 0:
                raise LichenError(ErrorCode.NOT_FOUND, "no such active account")
            await _revoke_everything(conn, account_id, now)
        log.info("account %s deleted; purge after %d days", account_id, self.grace_s // 86_400)
        account = await self.get(account_id)
        assert account is not None
        return account

    async def restore(self, login: str, password: str) -> Account:
        """Undo a deletion during the grace period (keys stay revoked; make new ones)."""
        row = await self._row_for_login(login)
        ok, _ = await self._passwords.verify(row.password_hash if row else None, password)
        if row is None or not ok:
            raise _bad_login()
        if row.deleted_ms is None:
            return _account(row)
        async with self._engine.begin() as conn:
            await conn.execute(
                update(AccountRow)
                .where(AccountRow.id == row.id)
                .values(deleted_ms=None, purge_after_ms=None)
            )
        log.info("account %s restored", row.id)
        account = await self.get(row.id)
        assert account is not None
        return account

    async def purge_due(self) -> list[str]:
        """Remove every account whose grace period is over; returns their ids."""
        now = self._now_ms()
        async with self._engine.connect() as conn:
            due = (
                (
                    await conn.execute(
                        select(AccountRow.id).where(
                            AccountRow.purge_after_ms.is_not(None),
                            AccountRow.purge_after_ms <= now,
                        )
                    )
                )
                .scalars()
                .all()
            )
        for account_id in due:
            async with self._engine.begin() as conn:
                await _purge(conn, account_id)
            log.info("account %s purged after its grace period", account_id)
        return list(due)

    def _now_ms(self) -> int:
        return to_ms(self._clock())


async def _revoke_everything(conn: AsyncConnection, account_id: str, now_ms: int) -> None:
    await conn.execute(
        update(ApiKeyRow)
        .where(ApiKeyRow.account_id == account_id, ApiKeyRow.revoked_ms.is_(None))
        .values(revoked_ms=now_ms)
    )
    await conn.execute(
        update(SessionFamilyRow)
        .where(SessionFamilyRow.account_id == account_id, SessionFamilyRow.revoked_ms.is_(None))
        .values(revoked_ms=now_ms)
    )


async def _purge(conn: AsyncConnection, account_id: str) -> None:
    families = select(SessionFamilyRow.id).where(SessionFamilyRow.account_id == account_id)
    await conn.execute(delete(SessionTokenRow).where(SessionTokenRow.family_id.in_(families)))
    await conn.execute(delete(SessionFamilyRow).where(SessionFamilyRow.account_id == account_id))
    await conn.execute(delete(ApiKeyRow).where(ApiKeyRow.account_id == account_id))
    await conn.execute(delete(AccountUsageRow).where(AccountUsageRow.account_id == account_id))
    await conn.execute(delete(AccountRow).where(AccountRow.id == account_id))
