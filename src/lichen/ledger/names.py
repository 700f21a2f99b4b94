"""Names of ledger accounts.

Ledger accounts are opaque strings, so the journal never holds personal data:

- ``user:<account id>``: a person's account (pays for inference);
- ``owner:<hex account public key>``: the owner of one or more nodes (is paid);
- ``system:issuance``: the only source of new credits; operator grants debit it,
  so its balance is minus everything ever granted and the sum over all accounts
  is always zero;
- ``system:escrow``: holds what consumers paid for jobs whose audit window is
  still open; its balance is the sum of every pending (held) amount.
"""

from __future__ import annotations

import re

from lichen.identity.signing import PUBLIC_KEY_SIZE

ISSUANCE = "system:issuance"
ESCROW = "system:escrow"
USER_PREFIX = "user:"
OWNER_PREFIX = "owner:"

_USER = re.compile(r"^user:[0-9a-f]{32}$")
_OWNER = re.compile(r"^owner:[0-9a-f]{64}$")


def user_account(account_id: str) -> str:
    return USER_PREFIX + account_id


def owner_account(account_key: bytes) -> str:
    """The ledger account of whoever holds the account key ``account_key`` (raw, 32 bytes)."""
    if len(account_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an account key is {PUBLIC_KEY_SIZE} bytes")
    return OWNER_PREFIX + account_key.hex()


def is_ledger_account(name: str) -> bool:
    """True for the names above (and nothing else)."""
    return name in (ISSUANCE, ESCROW) or bool(_USER.match(name) or _OWNER.match(name))
