"""Typed bodies of the admin API (``/v1/admin/...``), so ``/openapi.json`` documents them.

Requests refuse unknown fields and bound every value (a typo such as ``max_use``
is an error, not a default silently applied); responses carry metadata only,
never a secret other than the one a create call exists to return (an invite's
token, shown once).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from lichen.identity.invites import MAX_TRACKER_URLS
from lichen.ledger.journal import MAX_AMOUNT

MAX_INVITE_USES = 1_000_000_000  # the invites table's INTEGER, with room to spare
MAX_INVITE_TTL_S = 10 * 365 * 86_400
URL_MAX = 2048
ID_MAX = 128  # an invite id, a peer id (or a prefix, or a node name)

Role = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
Url = Annotated[str, StringConstraints(min_length=1, max_length=URL_MAX)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InviteCreate(_Request):
    """Terms of a new invite; the network key of the gateway's network signs it."""

    max_uses: int = Field(1, ge=0, le=MAX_INVITE_USES, description="Joins allowed (0 = any).")
    expires_s: int | None = Field(
        86_400, ge=1, le=MAX_INVITE_TTL_S, description="Lifetime in seconds; null = never."
    )
    roles: list[Role] = Field(
        default_factory=lambda: ["node"], min_length=1, max_length=4, description="Roles granted."
    )
    tracker_url: str | None = Field(
        None,
        min_length=1,
        max_length=URL_MAX,
        description="The tracker URL nodes dial (default: the network's public URL, or the "
        "URL this request reached when this server is also the tracker).",
    )
    other_tracker_urls: list[Url] = Field(
        default_factory=list,
        max_length=MAX_TRACKER_URLS - 1,
        description="More trackers of the network, dialled in turn after tracker_url.",
    )


class Invite(BaseModel):
    id: str
    roles: list[str]
    uses: int
    max_uses: int = Field(description="0 = unlimited")
    expires_ms: int = Field(description="Unix ms; 0 = never")
    created_ms: int
    state: Literal["active", "revoked", "expired", "used up"]


class InviteCreated(BaseModel):
    token: str = Field(description="The invite token: shown once, never stored.")
    tracker_url: str
    other_tracker_urls: list[str]
    invite: Invite


class InviteList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Invite]


class Member(BaseModel):
    peer_id: str
    name: str
    trust: str
    status: Literal["approved", "pending", "revoked"]
    invite_id: str | None
    first_seen_ms: int
    last_seen_ms: int


class MemberList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Member]


class CreditGrant(_Request):
    """New credits for an account: the one way the total in circulation grows."""

    account: str = Field(
        min_length=1, max_length=100, description="A username, or a ledger account (user:…)."
    )
    amount: int = Field(ge=1, le=MAX_AMOUNT, description="Micro-credits (1 credit = 10^6).")
    reason: str = Field(min_length=1, max_length=500, description="Why (kept in the ledger).")


class CreditGranted(BaseModel):
    account: str = Field(description="The ledger account credited.")
    amount: int
    seq: int = Field(description="The journal entry's sequence number.")
    entry_hash: str
    balance: int = Field(description="The account's balance after the grant, micro-credits.")


class Action(BaseModel):
    id: int
    created_ms: int
    account_id: str = Field(description="The operator's account.")
    key_id: str = Field(description="The operator key used.")
    action: str
    target: str
    detail: str


class ActionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Action]
