"""Typed access to the membership tables: invites and member devices.

Using an invite and registering the device it admits happen in one transaction,
and the use is counted by a single conditional ``UPDATE``, so two devices racing
for the last use of an invite cannot both get in, on SQLite or PostgreSQL.

Writes from one process go through one lock: SQLite has a single writer anyway,
and queueing in the event loop is fair and cheap where thousands of concurrent
handshakes would otherwise spin on SQLite's busy timeout ("database is locked").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lichen.errors import ErrorCode, LichenError
from lichen.identity.invites import Invite
from lichen.storage.tables import InviteRow, MemberRow

MemberStatus = Literal["approved", "pending", "revoked"]
MEMBER_STATUSES: tuple[MemberStatus, ...] = ("approved", "pending", "revoked")

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteRecord:
    """The terms of one invite. The token is never stored: it is a bearer secret."""

    id: str
    roles: tuple[str, ...]
    max_uses: int  # 0 = unlimited
    uses: int
    expires_ms: int  # 0 = never
    created_ms: int
    revoked: bool = False

    @classmethod
    def of(cls, invite: Invite) -> InviteRecord:
        """The terms of a freshly signed invite, as they are stored (unused)."""
        return cls(
            id=invite.invite_id,
            roles=tuple(invite.roles),
            max_uses=invite.max_uses,
            uses=0,
            expires_ms=invite.expires_ms,
            created_ms=invite.issued_ms,
        )

    def state(self, now_ms: int) -> str:
        """``active``, ``revoked``, ``expired`` or ``used up``."""
        if self.revoked:
            return "revoked"
        if self.expires_ms and now_ms >= self.expires_ms:
            return "expired"
        if self.max_uses and self.uses >= self.max_uses:
            return "used up"
        return "active"


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberRecord:
    """One device of the network."""

    peer_id: str
    device_key: bytes  # raw Ed25519 public key
    account_key: bytes  # raw Ed25519 public key that certified the device
    name: str
    trust: str
    status: MemberStatus
    invite_id: str | None
    first_seen_ms: int
    last_seen_ms: int
    updated_ms: int = 0


def _invite(row: Any) -> InviteRecord:  # a Row of InviteRow's columns
    return InviteRecord(
        id=row.id,
        roles=tuple(r for r in row.roles.split(",") if r),
        max_uses=row.max_uses,
        uses=row.uses,
        expires_ms=row.expires_ms,
        created_ms=row.created_ms,
        revoked=row.revoked,
    )


def _member(row: Any) -> MemberRecord:  # a Row of MemberRow's columns
    return MemberRecord(
        peer_id=row.peer_id,
        device_key=bytes.fromhex(row.device_key),
        account_key=bytes.fromhex(row.account_key),
        name=row.name,
        trust=row.trust,
        status=cast(MemberStatus, row.status),
        invite_id=row.invite_id,
        first_seen_ms=row.first_seen_ms,
        last_seen_ms=row.last_seen_ms,
        updated_ms=row.updated_ms,
    )


class MembershipRepository:
    """The ``invites`` and ``members`` tables (data class ``account_data``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._write = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        async with self._write, self._engine.begin() as connection:
            yield connection

    # --- invites ---------------------------------------------------------------------

    async def add_invite(self, invite: InviteRecord) -> None:
        async with self._writing() as connection:
            await connection.execute(
                insert(InviteRow).values(
                    id=invite.id,
                    roles=",".join(invite.roles),
                    max_uses=invite.max_uses,
                    uses=invite.uses,
                    expires_ms=invite.expires_ms,
                    created_ms=invite.created_ms,
                    revoked=invite.revoked,
                )
            )

    async def invites(self) -> list[InviteRecord]:
        """Every invite, newest first."""
        query = select(InviteRow).order_by(InviteRow.created_ms.desc(), InviteRow.id)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_invite(row) for row in rows]

    async def invite(self, invite_id: str) -> InviteRecord | None:
        async with self._engine.connect() as connection:
            return await _get_invite(connection, invite_id)

    async def find_invite(self, prefix: str) -> InviteRecord:
        """The invite whose id is or starts with ``prefix`` (NOT_FOUND unless exactly one)."""
        matches = [i for i in await self.invites() if i.id.startswith(prefix.strip().lower())]
        return _exactly_one(matches, f"invite {prefix!r}", lambda i: i.id)

    async def revoke_invite(self, invite_id: str) -> bool:
        async with self._writing() as connection:
            result = await connection.execute(
                update(InviteRow).where(InviteRow.id == invite_id).values(revoked=True)
            )
        return result.rowcount == 1

    # --- members ---------------------------------------------------------------------

    async def member(self, peer_id: str) -> MemberRecord | None:
        query = select(MemberRow).where(MemberRow.peer_id == peer_id)
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).one_or_none()
        return _member(row) if row is not None else None

    async def members(self) -> list[MemberRecord]:
        """Every member, oldest first."""
        query = select(MemberRow).order_by(MemberRow.first_seen_ms, MemberRow.peer_id)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_member(row) for row in rows]

    async def find_member(self, prefix: str) -> MemberRecord:
        """The member whose peer id (or name) matches ``prefix`` (NOT_FOUND unless exactly one)."""
        wanted = prefix.strip()
        members = await self.members()
        matches = [m for m in members if m.peer_id == wanted or m.name == wanted]
        if not matches:
            matches = [m for m in members if m.peer_id.startswith(wanted.lower())]
        return _exactly_one(matches, f"member {prefix!r}", lambda m: m.peer_id)

    async def join(self, member: MemberRecord, *, now_ms: int) -> MemberRecord:
        """Register a new device, counting a use of ``member.invite_id`` if it has one.

        Raises ``INVITE_INVALID`` when the invite is unknown, revoked, expired or used
        up. If the device registered concurrently, returns the stored record instead.
        """
        try:
            async with self._writing() as connection:
                if member.invite_id is not None:
                    await _use_invite(connection, member.invite_id, now_ms)
                await connection.execute(
                    insert(MemberRow).values(
                        peer_id=member.peer_id,
                        device_key=member.device_key.hex(),
                        account_key=member.account_key.hex(),
                        name=member.name,
                        trust=member.trust,
                        status=member.status,
                        invite_id=member.invite_id,
                        first_seen_ms=member.first_seen_ms,
                        last_seen_ms=member.last_seen_ms,
                        updated_ms=now_ms,
                    )
                )
        except IntegrityError:
            existing = await self.member(member.peer_id)
            if existing is None:
                raise
            return existing  # the same device won a race with itself; no use was counted
        return member

    async def set_status(self, peer_id: str, status: MemberStatus, *, now_ms: int) -> bool:
        async with self._writing() as connection:
            result = await connection.execute(
                update(MemberRow)
                .where(MemberRow.peer_id == peer_id)
                .values(status=status, updated_ms=now_ms)
            )
        return result.rowcount == 1

    async def touch(self, peer_id: str, *, now_ms: int, name: str | None = None) -> None:
        """Record that the device was seen (and its current certificate name)."""
        await self.touch_many({peer_id: (now_ms, name)})

    async def touch_many(self, seen: dict[str, tuple[int, str | None]]) -> None:
        """``touch`` for many devices in one transaction: peer id -> (seen ms, name)."""
        if not seen:
            return
        named = [
            {"pid": pid, "seen": ms, "new_name": name}
            for pid, (ms, name) in seen.items()
            if name is not None
        ]
        unnamed = [{"pid": pid, "seen": ms} for pid, (ms, name) in seen.items() if name is None]
        by_pid = MemberRow.peer_id == bindparam("pid")
        async with self._writing() as connection:
            if named:
                await connection.execute(
                    update(MemberRow)
                    .where(by_pid)
                    .values(last_seen_ms=bindparam("seen"), name=bindparam("new_name")),
                    named,
                )
            if unnamed:
                await connection.execute(
                    update(MemberRow).where(by_pid).values(last_seen_ms=bindparam("seen")),
                    unnamed,
                )

    async def approved(self) -> list[MemberRecord]:
        """Every approved member (what a starting tracker keeps in memory)."""
        query = select(MemberRow).where(MemberRow.status == "approved")
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_member(row) for row in rows]

    async def changed_since(self, since_ms: int) -> list[tuple[str, MemberStatus]]:
        """(peer id, status) of members whose status changed at or after ``since_ms``."""
        query = select(MemberRow.peer_id, MemberRow.status).where(MemberRow.updated_ms >= since_ms)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [(row.peer_id, cast(MemberStatus, row.status)) for row in rows]

    async def revoked_since(self, since_ms: int) -> list[str]:
        """Peer ids revoked at or after ``since_ms``."""
        query = select(MemberRow.peer_id).where(
            MemberRow.status == "revoked", MemberRow.updated_ms >= since_ms
        )
        async with self._engine.connect() as connection:
            return list((await connection.scalars(query)).all())


async def _get_invite(connection: AsyncConnection, invite_id: str) -> InviteRecord | None:
    row = (
        await connection.execute(select(InviteRow).where(InviteRow.id == invite_id))
    ).one_or_none()
    return _invite(row) if row is not None else None


async def _use_invite(connection: AsyncConnection, invite_id: str, now_ms: int) -> None:
    result = await connection.execute(
        update(InviteRow)
        .where(
            InviteRow.id == invite_id,
            InviteRow.revoked.is_(False),
            or_(InviteRow.max_uses == 0, InviteRow.uses < InviteRow.max_uses),
            or_(InviteRow.expires_ms == 0, InviteRow.expires_ms > now_ms),
        )
        .values(uses=InviteRow.uses + 1)
    )
    if result.rowcount == 1:
        return
    invite = await _get_invite(connection, invite_id)
    reason = "unknown invite" if invite is None else f"invite {invite.state(now_ms)}"
    raise LichenError(ErrorCode.INVITE_INVALID, reason)


def _exactly_one(matches: list[T], what: str, key: Callable[[T], str]) -> T:
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LichenError(ErrorCode.NOT_FOUND, f"no {what}")
    names = ", ".join(key(m) for m in matches[:5])
    raise LichenError(ErrorCode.INVALID_REQUEST, f"{what} is ambiguous: {names}")
