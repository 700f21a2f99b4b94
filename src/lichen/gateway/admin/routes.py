"""The admin API's routes under ``/v1/admin``: invites, members, credit grants, the log.

Every route takes a ``Caller`` (the :class:`~lichen.gateway.admin.auth.OperatorAuth`
dependency) in its signature, so a route added here is guarded where it is declared.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request

from lichen.errors import ErrorCode, LichenError
from lichen.gateway.admin import protocol as p
from lichen.gateway.admin.auth import OperatorAuth
from lichen.gateway.admin.service import AdminService, Operator
from lichen.node.join import dial_url

PREFIX = "/v1/admin"

ERRORS: dict[int | str, dict[str, object]] = {
    "4XX": {
        "description": "Refused: 400 invalid body, 401 no or unknown key, 403 not an operator "
        "key (operator_required), 404 unknown invite/member/account, 413 body too large; "
        "OpenAI's error shape {error: {message, type, param, code}}",
    },
}

AUTH_STATE = "lichen_admin_auth"

Ident = Annotated[str, Path(min_length=1, max_length=p.ID_MAX)]


async def current_operator(request: Request) -> Operator:
    """The calling operator, by the :class:`OperatorAuth` that :func:`install_admin` set."""
    auth: OperatorAuth = getattr(request.app.state, AUTH_STATE)
    return await auth(request)


Caller = Annotated[Operator, Depends(current_operator)]


def install_admin(
    app: FastAPI,
    service: AdminService,
    auth: OperatorAuth,
    *,
    public_url: str | None = None,
    serves_nodes: bool = False,
) -> None:
    """Mount ``/v1/admin/...`` on ``app``. New invites carry ``public_url`` by default,
    else (when ``serves_nodes``: ``app`` is also the tracker's) the URL the request
    reached; else the body must name the tracker."""
    setattr(app.state, AUTH_STATE, auth)
    router = APIRouter(prefix=PREFIX, tags=["admin"], responses=ERRORS)

    def invite_url(request: Request, body: p.InviteCreate) -> str:
        if body.tracker_url:
            return body.tracker_url
        if public_url:
            return dial_url(public_url)
        if serves_nodes:
            return dial_url(str(request.base_url))
        raise LichenError(
            ErrorCode.INVALID_REQUEST,
            "this server takes no node connections and has no public_url: name the "
            "tracker nodes should dial in tracker_url",
            param="tracker_url",
        )

    @router.get("/invites")
    async def list_invites(who: Caller) -> p.InviteList:
        return await service.invites()

    @router.post("/invites", status_code=201)
    async def create_invite(who: Caller, body: p.InviteCreate, request: Request) -> p.InviteCreated:
        return await service.create_invite(who, body, invite_url(request, body))

    @router.post("/invites/{invite_id}/revoke")
    async def revoke_invite(who: Caller, invite_id: Ident) -> p.Invite:
        return await service.revoke_invite(who, invite_id)

    @router.get("/members")
    async def list_members(who: Caller) -> p.MemberList:
        return await service.member_list()

    @router.post("/members/{peer}/approve")
    async def approve_member(who: Caller, peer: Ident) -> p.Member:
        return await service.set_status(who, peer, "approved")

    @router.post("/members/{peer}/revoke")
    async def revoke_member(who: Caller, peer: Ident) -> p.Member:
        return await service.set_status(who, peer, "revoked")

    @router.post("/credits/grants", status_code=201)
    async def grant_credits(who: Caller, body: p.CreditGrant) -> p.CreditGranted:
        return await service.grant(who, body)

    @router.get("/actions")
    async def list_actions(
        who: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> p.ActionList:
        return await service.actions_list(limit)

    app.include_router(router)
