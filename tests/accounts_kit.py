"""Test helpers for accounts, sessions, keys and quotas: a gateway app without nodes."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.accounts.passwords import fast_passwords
from lichen.clock import Clock, ManualClock
from lichen.config import Settings
from lichen.gateway.completions import Outcome
from lichen.gateway.dialects.openai import OpenAIRoute
from lichen.gateway.dialects.route import dialect_router
from lichen.gateway.guard import current_ticket
from lichen.gateway.services import GatewayServices
from lichen.http.errors import install_error_handlers
from lichen.identity.signing import generate_key
from lichen.ratelimit import Backend
from lichen.wire.messages import Usage

NETWORK_KEY = generate_key()
PASSWORD = "correct horse battery staple"


def make_accounting(
    db: AsyncEngine,
    *,
    clock: Clock | None = None,
    backend: Backend | None = None,
    **settings: Any,
) -> GatewayServices:
    return GatewayServices.build(
        Settings(**settings),
        db,
        NETWORK_KEY,
        clock=clock or ManualClock(),
        passwords=fast_passwords(),
        backend=backend,
    )


def account_app(acc: GatewayServices, *, tokens_per_answer: int = 10) -> FastAPI:
    """The accounting routes and guard, plus a stand-in chat endpoint that "answers"
    with ``tokens_per_answer`` tokens and settles like the real one."""
    app = FastAPI()
    install_error_handlers(app)
    acc.install(app)

    async def chat(request: Request) -> JSONResponse:
        ticket = current_ticket()
        assert ticket is not None
        outcome = Outcome(kind="chat", model="smollm2-135m", stream=False, started=0.0)
        outcome.usage = Usage(tokens_per_answer // 2, tokens_per_answer - tokens_per_answer // 2)
        # What was "streamed": one token per " x" (SmolLM2's tokenizer, and >= 1 byte each).
        outcome.completion_text = " x" * outcome.usage.completion_tokens
        await acc.guard.settle(outcome)
        return JSONResponse({"subject": ticket.principal.subject})

    router = dialect_router(OpenAIRoute)  # guarded like every inference route
    router.add_api_route("/v1/chat/completions", chat, methods=["POST"])
    app.include_router(router)
    return app


def client(app: FastAPI, *, https: bool = True) -> httpx.AsyncClient:
    scheme = "https" if https else "http"
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=f"{scheme}://testserver"
    )


async def signup(
    http: httpx.AsyncClient, username: str = "alice", email: str | None = None
) -> dict[str, Any]:
    response = await http.post(
        "/v1/auth/signup",
        json={
            "username": username,
            "email": email or f"{username}@example.org",
            "password": PASSWORD,
        },
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def csrf(body: dict[str, Any]) -> dict[str, str]:
    return {"x-csrf-token": body["csrf_token"]}
