"""Browser sessions: short-lived access tokens and rotating refresh tokens.

A login starts a *family*. It holds an access token (15 minutes) and a refresh
token (30 days). Refreshing spends the refresh token and issues a new pair in
the same family. A refresh token can be spent once: presenting a spent one means
it was copied, so the whole family is revoked (the thief and the owner both
have to sign in again). Only SHA-256 digests of tokens are stored.

Spending is a single conditional ``UPDATE ... WHERE used_ms IS NULL``, so two
concurrent refreshes with one token cannot both win, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lichen.accounts.tokens import digest, new_token
from lichen.clock import Clock, system_clock, to_ms
from lichen.errors import ErrorCode, LichenError
from lichen.storage.accounts_tables import AccountRow, SessionFamilyRow, SessionTokenRow

log = logging.getLogger(__name__)

ACCESS_TTL_S = 15 * 60
REFRESH_TTL_S = 30 * 86_400
TOKEN_MAX = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedSession:
    """A fresh token pair; the tokens go into cookies and are never stored."""

    account_id: str
    family_id: str
    access_token: str
    access_expires_ms: int
    refresh_token: str
    refresh_expires_ms: int


@dataclass(frozen=True, slots=True)
class SessionInfo:
    account_id: str
    family_id: str
    expires_ms: int  # of the access token


def _refused(message: str) -> LichenError:
    return LichenError(ErrorCode.INVALID_CREDENTIALS, message)


class SessionService:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Clock = system_clock,
        access_ttl_s: int = ACCESS_TTL_S,
        refresh_ttl_s: int = REFRESH_TTL_S,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s

    async def start(self, account_id: str) -> IssuedSession:
        """A new family for a login that was just checked."""
        family_id = uuid.uuid4().hex
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(SessionFamilyRow).values(
                    id=family_id, account_id=account_id, created_ms=self._now_ms()
                )
            )
            return await self._issue(conn, account_id, family_id)

    async def _issue(self, conn: AsyncConnection, account_id: str, family_id: str) -> IssuedSession:
        now = self._now_ms()
        access, refresh = new_token(), new_token()
        issued = IssuedSession(
            account_id=account_id,
            family_id=family_id,
            access_token=access,
            access_expires_ms=now + self.access_ttl_s * 1000,
            refresh_token=refresh,
            refresh_expires_ms=now + self.refresh_ttl_s * 1000,
        )
        await conn.execute(
            insert(SessionTokenRow),
            [
                {
                    "family_id": family_id,
                    "kind": "access",
                    "token_hash": digest(access),
                    "created_ms": now,
                    "expires_ms": issued.access_expires_ms,
                },
                {
                    "family_id": family_id,
                    "kind": "refresh",
                    "token_hash": digest(refresh),
                    "created_ms": now,
                    "expires_ms": issued.refresh_expires_ms,
                },
            ],
        )
        return issued

    async def resolve(self, access_token: str) -> SessionInfo | None:
        """The live session for an access token, or None (unknown, expired, revoked)."""
        if not access_token or len(access_token) > TOKEN_MAX:
            return None
        query = (
            select(SessionTokenRow.expires_ms, SessionFamilyRow.id, SessionFamilyRow.account_id)
            .join(SessionFamilyRow, SessionFamilyRow.id == SessionTokenRow.family_id)
            .join(AccountRow, AccountRow.id == SessionFamilyRow.account_id)
            .where(
                SessionTokenRow.token_hash == digest(access_token),
                SessionTokenRow.kind == "access",
                SessionTokenRow.expires_ms > self._now_ms(),
                SessionFamilyRow.revoked_ms.is_(None),
                AccountRow.deleted_ms.is_(None),
            )
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else SessionInfo(row.account_id, row.id, row.expires_ms)

    async def refresh(self, refresh_token: str) -> IssuedSession:
        """Spend ``refresh_token`` for a new pair; a spent token revokes its family."""
        if not refresh_token or len(refresh_token) > TOKEN_MAX:
            raise _refused("no valid refresh token; sign in again")
        now = self._now_ms()
        token_hash = digest(refresh_token)
        async with self._engine.begin() as conn:
            # Write first: the transaction takes the write lock before it reads, so
            # SQLite never has to upgrade a read snapshot (which can fail under load).
            spent = await conn.execute(
                update(SessionTokenRow)
                .where(
                    SessionTokenRow.token_hash == token_hash,
                    SessionTokenRow.kind == "refresh",
                    SessionTokenRow.used_ms.is_(None),
                    SessionTokenRow.expires_ms > now,
                )
                .values(used_ms=now)
            )
            row = (
                await conn.execute(
                    select(
                        SessionTokenRow.expires_ms,
                        SessionTokenRow.used_ms,
                        SessionFamilyRow.id.label("family_id"),
                        SessionFamilyRow.account_id,
                        SessionFamilyRow.revoked_ms,
                        AccountRow.deleted_ms,
                    )
                    .join(SessionFamilyRow, SessionFamilyRow.id == SessionTokenRow.family_id)
                    .join(AccountRow, AccountRow.id == SessionFamilyRow.account_id)
                    .where(SessionTokenRow.token_hash == token_hash)
                )
            ).first()
            if row is None or row.revoked_ms is not None or row.deleted_ms is not None:
                raise _refused("no valid refresh token; sign in again")  # rolls back the spend
            if spent.rowcount == 1:
                return await self._issue(conn, row.account_id, row.family_id)
            if row.used_ms is None:  # not spent, so it did not match because it expired
                raise _refused("the session expired; sign in again")
        # Reuse of a spent token: revoke the family in its own transaction (the one
        # above is over), so the revocation sticks even though the request fails.
        await self._revoke_family(row.family_id)
        log.warning("refresh token reuse in session family %s; family revoked", row.family_id)
        raise _refused("this refresh token was already used; the session was revoked")

    async def end(self, *, access_token: str = "", refresh_token: str = "") -> None:
        """Log out: revoke the family of whichever token is given."""
        for token, kind in ((access_token, "access"), (refresh_token, "refresh")):
            if not token or len(token) > TOKEN_MAX:
                continue
            async with self._engine.connect() as conn:
                family = await conn.scalar(
                    select(SessionTokenRow.family_id).where(
                        SessionTokenRow.token_hash == digest(token), SessionTokenRow.kind == kind
                    )
                )
            if family is not None:
                await self._revoke_family(family)
                return

    async def _revoke_family(self, family_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(SessionFamilyRow)
                .where(SessionFamilyRow.id == family_id, SessionFamilyRow.revoked_ms.is_(None))
                .values(revoked_ms=self._now_ms())
            )

    async def revoke_account(self, account_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(SessionFamilyRow)
                .where(
                    SessionFamilyRow.account_id == account_id,
                    SessionFamilyRow.revoked_ms.is_(None),
                )
                .values(revoked_ms=self._now_ms())
            )

    async def sweep_expired(self) -> int:
        """Delete expired tokens and families left without tokens; returns tokens deleted."""
        now = self._now_ms()
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(SessionTokenRow).where(SessionTokenRow.expires_ms <= now)
            )
            live = select(SessionTokenRow.family_id).distinct()
            await conn.execute(delete(SessionFamilyRow).where(SessionFamilyRow.id.not_in(live)))
        return int(result.rowcount or 0)

    def _now_ms(self) -> int:
        return to_ms(self._clock())
