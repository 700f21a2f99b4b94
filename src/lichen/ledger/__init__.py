"""The credit ledger: signed receipts, prices, a hash-chained double-entry journal.

- :mod:`~lichen.ledger.receipts`: what nodes sign per job and gateways countersign;
- :mod:`~lichen.ledger.pricing`: integer micro-credits per token by model tier;
- :mod:`~lichen.ledger.journal`: entry hashing and signing (pure);
- :mod:`~lichen.ledger.service`: :class:`Ledger` (settle, grant, escrow release and
  forfeit, balances, history), writing through :mod:`~lichen.ledger.batch`;
- :mod:`~lichen.ledger.escrow`: holds in ``system:escrow`` until the audit window
  closes; :mod:`~lichen.ledger.releaser` releases them periodically;
- :mod:`~lichen.ledger.charge`: what is charged (counted, bounded), from
  :mod:`~lichen.ledger.tokens` (the model's tokenizer, read by
  :mod:`~lichen.ledger.gguf_vocab` from its GGUF header);
- :mod:`~lichen.ledger.verify`: the offline audit behind ``lichen ledger verify``.
"""

from __future__ import annotations

from lichen.ledger.journal import JournalEntry
from lichen.ledger.names import ESCROW, ISSUANCE, owner_account, user_account
from lichen.ledger.pricing import MICRO_PER_CREDIT, cost, format_credits
from lichen.ledger.receipts import Receipt, ReceiptSigner, sign_receipt, verify_receipt
from lichen.ledger.service import Claim, Ledger, Settlement
from lichen.ledger.verify import VerifyReport, verify_ledger

__all__ = [
    "ESCROW",
    "ISSUANCE",
    "MICRO_PER_CREDIT",
    "Claim",
    "JournalEntry",
    "Ledger",
    "Receipt",
    "ReceiptSigner",
    "Settlement",
    "VerifyReport",
    "cost",
    "format_credits",
    "owner_account",
    "sign_receipt",
    "user_account",
    "verify_ledger",
    "verify_receipt",
]
