"""Data export: everything stored about one account, as JSON-able data.

The export is built only from rows keyed by the account's own id (and its ledger
account), so nothing of any other account can appear in it: ledger lines show
the other side only as an opaque ledger account name.
"""

from __future__ import annotations

from typing import Any

from lichen.accounts.keys import ApiKeyService
from lichen.accounts.service import AccountService
from lichen.accounts.usage import UsageRepository
from lichen.clock import Clock, system_clock, to_ms
from lichen.errors import ErrorCode, LichenError
from lichen.ledger.service import Ledger

EXPORT_FORMAT = "lichen-account-export-v1"
HISTORY_LIMIT = 10_000


async def export_account(
    account_id: str,
    *,
    accounts: AccountService,
    keys: ApiKeyService,
    usage: UsageRepository,
    ledger: Ledger | None,
    clock: Clock = system_clock,
) -> dict[str, Any]:
    account = await accounts.get(account_id)
    if account is None:
        raise LichenError(ErrorCode.NOT_FOUND, "no such account")
    credits: dict[str, Any] = {"ledger_account": account.ledger_account, "balance": 0}
    if ledger is not None:
        credits["balance"] = await ledger.balance(account.ledger_account)
        credits["history"] = [
            {
                "seq": e.seq,
                "kind": e.kind,
                "debit": e.debit,
                "credit": e.credit,
                "amount": e.amount,
                "receipt_hash": e.receipt_hash,
                "memo": e.memo,
                "recorded_ms": e.recorded_ms,
            }
            for e in await ledger.history(account.ledger_account, limit=HISTORY_LIMIT)
        ]
    return {
        "format": EXPORT_FORMAT,
        "exported_ms": to_ms(clock()),
        "account": account.public(),
        "api_keys": [k.public() for k in await keys.all_for(account_id)],
        "usage": [u.public() for u in await usage.daily(account_id, days=3650)],
        "credits": credits,
    }
