"""``/v1/account/*``: the signed-in account, its keys, usage, credits, export, deletion.

Callers authenticate with a session cookie (plus ``X-CSRF-Token`` on changes) or
an API key with the ``account`` scope. Every route reads or changes only the
caller's own account.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from lichen.accounts.export import export_account
from lichen.accounts.principal import SCOPE_ACCOUNT, SCOPE_INFERENCE
from lichen.errors import ErrorCode, LichenError
from lichen.http.session_cookies import clear_session_cookies
from lichen.ledger.pricing import format_credits

if TYPE_CHECKING:
    from lichen.gateway.services import GatewayServices


class NewKeyBody(BaseModel):
    name: str = Field(default="key", max_length=100)
    scopes: list[str] = Field(default_factory=lambda: [SCOPE_INFERENCE], max_length=8)


class RenameKeyBody(BaseModel):
    name: str = Field(max_length=100)


class PasswordBody(BaseModel):
    password: str = Field(max_length=1024)


class ChangePasswordBody(BaseModel):
    old_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


def account_router(acc: GatewayServices) -> APIRouter:
    router = APIRouter(prefix="/v1/account", tags=["account"])

    async def caller(request: Request) -> str:
        principal = await acc.authenticator.require(request, SCOPE_ACCOUNT)
        assert principal.account_id is not None
        return principal.account_id

    @router.get("")
    async def me(request: Request) -> JSONResponse:
        account = await acc.accounts.get(await caller(request))
        if account is None:
            raise LichenError(ErrorCode.NOT_FOUND, "no such account")
        balance = await acc.ledger.balance(account.ledger_account)
        return JSONResponse(
            account.public() | {"balance": balance, "balance_credits": format_credits(balance)}
        )

    @router.post("/password")
    async def change_password(body: ChangePasswordBody, request: Request) -> JSONResponse:
        """Change the password; every session of the account is signed out."""
        account_id = await caller(request)
        await acc.accounts.change_password(account_id, body.old_password, body.new_password)
        await acc.sessions.revoke_account(account_id)
        response = JSONResponse({"changed": True})
        clear_session_cookies(request, response)
        return response

    @router.get("/keys")
    async def list_keys(request: Request) -> JSONResponse:
        keys = await acc.keys.all_for(await caller(request))
        return JSONResponse({"object": "list", "data": [k.public() for k in keys]})

    @router.post("/keys")
    async def create_key(body: NewKeyBody, request: Request) -> JSONResponse:
        """A new API key. Its secret is in this answer only: it is never shown again."""
        principal = await acc.authenticator.require(request, SCOPE_ACCOUNT)
        assert principal.account_id is not None
        new = await acc.keys.create(
            principal.account_id, name=body.name, scopes=body.scopes, granted=principal.scopes
        )
        return JSONResponse(new.key.public() | {"key": new.secret}, status_code=201)

    @router.patch("/keys/{key_id}")
    async def rename_key(key_id: str, body: RenameKeyBody, request: Request) -> JSONResponse:
        key = await acc.keys.rename(await caller(request), key_id, body.name)
        return JSONResponse(key.public())

    @router.delete("/keys/{key_id}")
    async def revoke_key(key_id: str, request: Request) -> JSONResponse:
        """Revoke a key; it fails on the very next request, on every gateway."""
        key = await acc.keys.revoke(await caller(request), key_id)
        return JSONResponse(key.public())

    @router.get("/usage")
    async def usage(request: Request, days: int = Query(30, ge=1, le=3650)) -> JSONResponse:
        rows = await acc.usage.daily(await caller(request), days=days)
        totals = {
            "requests": sum(r.requests for r in rows),
            "prompt_tokens": sum(r.prompt_tokens for r in rows),
            "completion_tokens": sum(r.completion_tokens for r in rows),
            "credits": sum(r.credits for r in rows),
        }
        return JSONResponse({"object": "list", "data": [r.public() for r in rows]} | totals)

    @router.get("/credits")
    async def credits(request: Request, limit: int = Query(100, ge=1, le=1000)) -> JSONResponse:
        account = await acc.accounts.get(await caller(request))
        assert account is not None
        ledger_account = account.ledger_account
        balance = await acc.ledger.balance(ledger_account)
        history: list[dict[str, Any]] = [
            {
                "seq": e.seq,
                "kind": e.kind,
                "amount": e.amount if e.credit == ledger_account else -e.amount,
                "counterparty": e.debit if e.credit == ledger_account else e.credit,
                "memo": e.memo,
                "recorded_ms": e.recorded_ms,
            }
            for e in await acc.ledger.history(ledger_account, limit=limit)
        ]
        return JSONResponse(
            {
                "ledger_account": ledger_account,
                "balance": balance,
                "balance_credits": format_credits(balance),
                "history": history,
            }
        )

    @router.get("/export")
    async def export(request: Request) -> Response:
        """Everything stored about this account, as a JSON download."""
        data = await export_account(
            await caller(request),
            accounts=acc.accounts,
            keys=acc.keys,
            usage=acc.usage,
            ledger=acc.ledger,
            clock=acc.clock,
        )
        return Response(
            json.dumps(data, indent=2),
            media_type="application/json",
            headers={"content-disposition": 'attachment; filename="lichen-account.json"'},
        )

    @router.delete("")
    async def delete(body: PasswordBody, request: Request) -> JSONResponse:
        """Delete the account (password required): it stops now and is purged after 30 days."""
        account_id = await caller(request)
        account = await acc.accounts.get(account_id)
        assert account is not None
        await acc.accounts.authenticate(account.username, body.password)
        deleted = await acc.accounts.delete(account_id)
        response = JSONResponse(
            {
                "deleted": True,
                "purge_after_ms": deleted.purge_after_ms,
                "restore": "POST /v1/auth/restore with your username and password",
            }
        )
        clear_session_cookies(request, response)
        return response

    return router
