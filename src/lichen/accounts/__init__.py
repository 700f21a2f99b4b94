"""Accounts: people, their passwords, sessions, API keys, usage and data export.

Service objects, one concern each, all taking an engine and an injectable clock:

- :class:`AccountService` (:mod:`.service`): sign up, authenticate, delete, restore, purge;
- :class:`SessionService` (:mod:`.sessions`): access/refresh tokens with rotation;
- :class:`ApiKeyService` (:mod:`.keys`): scoped API keys, shown once, revocable;
- :class:`UsageRepository` (:mod:`.usage`): daily usage per account;
- :func:`export_account` (:mod:`.export`): one account's data as JSON;
- :class:`AccountSweeper` (:mod:`.sweeper`): purges after the grace period;
- :class:`AccountRoles` (:mod:`.roles`): ``user`` or ``operator`` (the admin API);
- :class:`ActionLog` (:mod:`.action_log`): every write through the admin API.

The HTTP side (cookies, CSRF, routes) lives in :mod:`lichen.gateway`.
"""

from __future__ import annotations

from lichen.accounts.action_log import ActionLog, OperatorAction
from lichen.accounts.export import export_account
from lichen.accounts.keys import ApiKey, ApiKeyService, NewApiKey
from lichen.accounts.passwords import Passwords, fast_passwords
from lichen.accounts.principal import SCOPE_ACCOUNT, SCOPE_INFERENCE, SCOPES, Principal
from lichen.accounts.roles import AccountRoles
from lichen.accounts.service import DELETION_GRACE_S, Account, AccountService
from lichen.accounts.sessions import IssuedSession, SessionInfo, SessionService
from lichen.accounts.sweeper import AccountSweeper
from lichen.accounts.usage import DailyUsage, UsageRepository

__all__ = [
    "DELETION_GRACE_S",
    "SCOPES",
    "SCOPE_ACCOUNT",
    "SCOPE_INFERENCE",
    "Account",
    "AccountRoles",
    "AccountService",
    "AccountSweeper",
    "ActionLog",
    "ApiKey",
    "ApiKeyService",
    "DailyUsage",
    "IssuedSession",
    "NewApiKey",
    "OperatorAction",
    "Passwords",
    "Principal",
    "SessionInfo",
    "SessionService",
    "UsageRepository",
    "export_account",
    "fast_passwords",
]
