"""The admin API's work: invites, members and credit grants, each write logged.

The same database rows the operator's local commands write: an invite's terms in
``invites``, a member's status in ``members`` (a tracker's
:class:`~lichen.tracker.revocations.RevocationWatcher` polls it and disconnects a
revoked node within ``membership_poll_s``, whichever tracker it is connected to),
a grant in the signed ledger. Every successful write adds one row to the
operators' action log (:class:`~lichen.accounts.action_log.ActionLog`).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.accounts.action_log import ActionLog
from lichen.accounts.service import AccountService
from lichen.clock import Clock, system_clock, to_ms
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.admin import protocol as p
from lichen.identity.invites import create_invite, parse_invite
from lichen.ledger.names import is_ledger_account
from lichen.ledger.service import Ledger
from lichen.storage.membership import InviteRecord, MemberRecord, MembershipRepository
from lichen.storage.membership import MemberStatus as Status


@dataclass(frozen=True, slots=True)
class Operator:
    """Who is calling the admin API: an operator account, through one of its keys."""

    account_id: str
    key_id: str


def invite_view(invite: InviteRecord, now_ms: int) -> p.Invite:
    return p.Invite(
        id=invite.id,
        roles=list(invite.roles),
        uses=invite.uses,
        max_uses=invite.max_uses,
        expires_ms=invite.expires_ms,
        created_ms=invite.created_ms,
        state=invite.state(now_ms),
    )


def member_view(member: MemberRecord) -> p.Member:
    return p.Member(
        peer_id=member.peer_id,
        name=member.name,
        trust=member.trust,
        status=member.status,
        invite_id=member.invite_id,
        first_seen_ms=member.first_seen_ms,
        last_seen_ms=member.last_seen_ms,
    )


class AdminService:
    def __init__(
        self,
        *,
        members: MembershipRepository,
        accounts: AccountService,
        ledger: Ledger,
        network_key: Ed25519PrivateKey,
        actions: ActionLog,
        clock: Clock = system_clock,
    ) -> None:
        self.members = members
        self.accounts = accounts
        self.ledger = ledger
        self.network_key = network_key
        self.actions = actions
        self._clock = clock

    def _now_ms(self) -> int:
        return to_ms(self._clock())

    # --- invites ---------------------------------------------------------------------

    async def invites(self) -> p.InviteList:
        now = self._now_ms()
        return p.InviteList(data=[invite_view(i, now) for i in await self.members.invites()])

    async def create_invite(
        self, who: Operator, body: p.InviteCreate, tracker_url: str
    ) -> p.InviteCreated:
        now = self._now_ms()
        try:
            token = create_invite(
                self.network_key,
                tracker_url=tracker_url,
                roles=list(body.roles),
                max_uses=body.max_uses,
                ttl_s=body.expires_s,
                now_ms=now,
                other_tracker_urls=body.other_tracker_urls,
            )
        except ValueError as exc:
            raise LichenError(ErrorCode.INVALID_REQUEST, str(exc), param="tracker_url") from None
        invite = parse_invite(token)
        record = InviteRecord.of(invite)
        await self.members.add_invite(record)
        await self._log(
            who,
            "invite.create",
            record.id,
            f"roles={','.join(record.roles)} max_uses={record.max_uses} "
            f"expires_ms={record.expires_ms} trackers={','.join(invite.tracker_urls())}",
        )
        return p.InviteCreated(
            token=token,
            tracker_url=tracker_url,
            other_tracker_urls=list(invite.other_tracker_urls),
            invite=invite_view(record, now),
        )

    async def revoke_invite(self, who: Operator, prefix: str) -> p.Invite:
        invite = await self.members.find_invite(prefix)
        await self.members.revoke_invite(invite.id)
        await self._log(who, "invite.revoke", invite.id)
        revoked = await self.members.invite(invite.id)
        return invite_view(revoked or invite, self._now_ms())

    # --- members ---------------------------------------------------------------------

    async def member_list(self) -> p.MemberList:
        return p.MemberList(data=[member_view(m) for m in await self.members.members()])

    async def set_status(self, who: Operator, peer: str, status: Status) -> p.Member:
        """Approve or revoke a member (a peer id, a unique prefix of one, or a node name)."""
        member = await self.members.find_member(peer)
        await self.members.set_status(member.peer_id, status, now_ms=self._now_ms())
        action = "member.approve" if status == "approved" else "member.revoke"
        await self._log(who, action, member.peer_id, f"was {member.status}")
        changed = await self.members.member(member.peer_id)
        return member_view(changed or member)

    # --- credits ---------------------------------------------------------------------

    async def grant(self, who: Operator, body: p.CreditGrant) -> p.CreditGranted:
        account = await self._ledger_account(body.account.strip())
        entry = await self.ledger.grant(account, body.amount, reason=body.reason)
        await self._log(who, "credits.grant", account, f"amount={body.amount} seq={entry.seq}")
        return p.CreditGranted(
            account=account,
            amount=body.amount,
            seq=entry.seq,
            entry_hash=entry.entry_hash,
            balance=await self.ledger.balance(account),
        )

    async def _ledger_account(self, name: str) -> str:
        if is_ledger_account(name):
            return name
        found = await self.accounts.by_username(name)
        if found is None or not found.active:
            raise LichenError(
                ErrorCode.NOT_FOUND, f"no ledger account or user named {name!r}", param="account"
            )
        return found.ledger_account

    # --- the log ---------------------------------------------------------------------

    async def actions_list(self, limit: int) -> p.ActionList:
        rows = await self.actions.recent(limit)
        return p.ActionList(data=[p.Action(**a.public()) for a in rows])

    async def _log(self, who: Operator, action: str, target: str, detail: str = "") -> None:
        await self.actions.record(
            account_id=who.account_id,
            key_id=who.key_id,
            action=action,
            target=target,
            detail=detail,
        )
