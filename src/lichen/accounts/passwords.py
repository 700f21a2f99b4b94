"""Password hashing with argon2id (``argon2-cffi``), off the event loop.

Hashes are PHC strings (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``), so the
parameters travel with each hash: raising them later only needs
:meth:`Passwords.verify`'s rehash signal, never a migration.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

PASSWORD_MIN = 8
PASSWORD_MAX = 256  # long enough for any passphrase, short enough to bound hashing work


class Passwords:
    """Hash and check passwords; the defaults are argon2-cffi's (RFC 9106 low-memory)."""

    def __init__(
        self, *, time_cost: int = 3, memory_cost: int = 65_536, parallelism: int = 4
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism
        )
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> tuple[bool, bool]:
        """(matches, needs_rehash). ``stored=None`` (no such user) costs the same as a miss."""
        if stored is None:
            if self._dummy is None:
                self._dummy = await self.hash("lichen-dummy-password")
            stored = self._dummy
            password = password + "\x00"  # never matches the dummy
        return await asyncio.to_thread(self._check, stored, password)

    def _check(self, stored: str, password: str) -> tuple[bool, bool]:
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False, False
        return True, self._hasher.check_needs_rehash(stored)


def fast_passwords() -> Passwords:
    """Cheap parameters for tests only: never use these to store real passwords."""
    return Passwords(time_cost=1, memory_cost=64, parallelism=1)
