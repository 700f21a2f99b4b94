"""Who may join: admission policies the tracker consults after authentication."""

from __future__ import annotations

from lichen.errors import ErrorCode, LichenError
from lichen.identity.certs import DeviceCertificate
from lichen.identity.trust import TrustLevel


class OwnerAdmission:
    """Admits only devices certified by the operator's own account key.

    This is what ``lichen up`` uses: its built-in node is the operator's own.
    """

    def __init__(self, account_public: bytes) -> None:
        self._account = account_public

    async def admit(self, cert: DeviceCertificate, invite: str, remote: str) -> str:
        if cert.account_key != self._account:
            raise LichenError(
                ErrorCode.IDENTITY_UNKNOWN, "this tracker only admits its operator's own nodes"
            )
        return TrustLevel.OWNER
