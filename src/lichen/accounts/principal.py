"""Who is making a request: an API key, a browser session, or nobody (anonymous)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lichen.ledger.names import user_account

PrincipalKind = Literal["api_key", "session", "anonymous"]

SCOPE_INFERENCE = "inference"  # chat and text completions
SCOPE_ACCOUNT = "account"  # manage the account: keys, usage, export, deletion
SCOPES: tuple[str, ...] = (SCOPE_INFERENCE, SCOPE_ACCOUNT)


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    kind: PrincipalKind
    client: str  # keyed hash of the client's address (per-address limits); never the address
    account_id: str | None = None
    key_id: str | None = None  # the API key used, if any
    scopes: frozenset[str] = frozenset()

    @property
    def anonymous(self) -> bool:
        return self.account_id is None

    @property
    def subject(self) -> str:
        """What rate limits count against: the key, the account, or the client address."""
        if self.key_id is not None:
            return f"key:{self.key_id}"
        if self.account_id is not None:
            return f"acct:{self.account_id}"
        return f"ip:{self.client}"

    @property
    def ledger_account(self) -> str | None:
        return None if self.account_id is None else user_account(self.account_id)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def anonymous(client: str) -> Principal:
    return Principal(kind="anonymous", client=client)
