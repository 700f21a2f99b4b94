"""Who is calling: an API key (``Authorization: Bearer``), a session cookie, or nobody.

An ``Authorization: Bearer`` value shaped like a Lichen key (``lk-...``) must be a
valid key (else 401 ``invalid_api_key``); any other value is an OpenAI client's
placeholder, accepted as anonymous where anonymous use is allowed and refused
elsewhere. A session cookie is honoured only with the CSRF header on
state-changing requests; with neither, the caller is anonymous and is known to
rate limits only by a keyed hash of its address (the address itself is never
stored: ``client_ip`` is a data class the policy may forbid).
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.requests import Request

from lichen.accounts.keys import ApiKeyService
from lichen.accounts.principal import SCOPES, Principal, anonymous
from lichen.accounts.sessions import SessionService
from lichen.accounts.tokens import looks_like_api_key
from lichen.errors import ErrorCode, LichenError
from lichen.http.requests import bearer_token
from lichen.http.session_cookies import SESSION_COOKIE, check_csrf
from lichen.identity.signing import sign

IP_TAG_DOMAIN = b"lichen-client-address-tag-v1"


def address_key(network_key: Ed25519PrivateKey) -> bytes:
    """A secret every gateway of one network derives alike (Ed25519 is deterministic)."""
    return hashlib.sha256(sign(network_key, IP_TAG_DOMAIN)).digest()


class Authenticator:
    def __init__(self, keys: ApiKeyService, sessions: SessionService, *, address_key: bytes):
        self.keys = keys
        self.sessions = sessions
        self._address_key = address_key

    def client_tag(self, request: Request) -> str:
        """A stable pseudonym of the client's address (for per-address limits)."""
        host = request.client.host if request.client is not None else "unknown"
        return hmac.new(self._address_key, host.encode(), hashlib.sha256).hexdigest()[:24]

    async def principal(self, request: Request, *, placeholders: bool = False) -> Principal:
        """The caller; raises 401 for a bad key or expired session, 403 for a missing CSRF.

        OpenAI clients must send *some* key, so where anonymous use is allowed
        (``placeholders``) a bearer value that is not shaped like a Lichen key
        (``lk-...``) is a placeholder and the caller counts as anonymous. A value
        shaped like a key is always checked: a revoked key never falls back to
        anonymous use.
        """
        tag = self.client_tag(request)
        if "authorization" in request.headers:
            secret = bearer_token(request.headers)
            if secret is None:
                raise LichenError(
                    ErrorCode.UNAUTHORIZED,
                    "send your API key as 'Authorization: Bearer <key>'",
                )
            if not (placeholders and not looks_like_api_key(secret)):
                return await self._keyed(secret, tag)
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            info = await self.sessions.resolve(token)
            if info is None:
                raise LichenError(
                    ErrorCode.INVALID_CREDENTIALS,
                    "the session expired; refresh it (POST /v1/auth/refresh) or sign in again",
                )
            check_csrf(request)
            return Principal(
                kind="session", client=tag, account_id=info.account_id, scopes=frozenset(SCOPES)
            )
        return anonymous(tag)

    async def _keyed(self, secret: str, tag: str) -> Principal:
        key = await self.keys.resolve(secret)
        if key is None:
            raise LichenError(
                ErrorCode.UNAUTHORIZED,
                "Incorrect API key provided (unknown, revoked, or of a deleted account).",
            )
        return Principal(
            kind="api_key",
            client=tag,
            account_id=key.account_id,
            key_id=key.id,
            scopes=frozenset(key.scopes),
        )

    async def require(self, request: Request, scope: str) -> Principal:
        """A signed-in caller allowed ``scope``: 401 when anonymous, 403 without the scope."""
        principal = await self.principal(request)
        if principal.anonymous:
            raise LichenError(
                ErrorCode.UNAUTHORIZED, "sign in, or send an API key as 'Authorization: Bearer'"
            )
        if not principal.allows(scope):
            raise LichenError(ErrorCode.FORBIDDEN, f"this API key lacks the '{scope}' scope")
        return principal
