"""Who may call the admin API: an operator key, in ``Authorization: Bearer`` only.

An operator key is an active API key, with the ``account`` scope, of an active
account whose role is ``operator`` (``lichen operator grant`` on the tracker's
machine). Cookies are never read here, so a browser session (and so a cross-site
request riding on one) cannot reach these routes: there is nothing for CSRF to
forge. Everything is checked against the database on every request, so a revoked
key or a demoted operator is refused on the next request.

- no ``Authorization`` header, another scheme, or an unknown/revoked key: 401;
- a valid key that is not an operator key: 403 ``operator_required``.
"""

from __future__ import annotations

from fastapi import Request

from lichen.accounts.keys import ApiKeyService
from lichen.accounts.principal import SCOPE_ACCOUNT
from lichen.accounts.roles import AccountRoles
from lichen.errors import ErrorCode, LichenError
from lichen.gateway.admin.service import Operator
from lichen.http.requests import bearer_token

CHALLENGE = {"www-authenticate": 'Bearer realm="lichen-admin"'}


class OperatorAuth:
    """A FastAPI dependency: the calling :class:`Operator`, or a typed 401/403."""

    def __init__(self, keys: ApiKeyService, roles: AccountRoles) -> None:
        self.keys = keys
        self.roles = roles

    async def __call__(self, request: Request) -> Operator:
        secret = bearer_token(request.headers)
        if secret is None:
            raise LichenError(
                ErrorCode.UNAUTHORIZED,
                "The admin API needs an operator key: 'Authorization: Bearer <key>' "
                "(browser sessions are not accepted here).",
                headers=CHALLENGE,
            )
        key = await self.keys.resolve(secret)
        if key is None:
            raise LichenError(
                ErrorCode.UNAUTHORIZED,
                "Incorrect API key provided (unknown, revoked, or of a deleted account).",
                headers=CHALLENGE,
            )
        if not await self.roles.is_operator(key.account_id):
            raise LichenError(
                ErrorCode.OPERATOR_REQUIRED,
                "This key's account is not an operator of this network "
                "(`lichen operator grant USERNAME` on the tracker's machine makes one).",
            )
        if SCOPE_ACCOUNT not in key.scopes:
            raise LichenError(
                ErrorCode.OPERATOR_REQUIRED,
                f"An operator key needs the '{SCOPE_ACCOUNT}' scope; this one is for "
                f"{', '.join(key.scopes)} only.",
            )
        return Operator(account_id=key.account_id, key_id=key.id)
