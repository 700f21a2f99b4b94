"""The admin API (``/v1/admin``): what the operator's commands do on the tracker's disk
(invites, member approval and revocation, credit grants), over HTTP, for operator keys.

- :mod:`.protocol`: typed request and response bodies;
- :mod:`.auth`: :class:`OperatorAuth`, the bearer-only operator-key dependency;
- :mod:`.service`: :class:`AdminService`, the work, each write in the action log;
- :mod:`.routes`: :func:`install_admin` mounts the routes.

:func:`build_admin` makes the service and the dependency from the gateway's
services, for the composition roots.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.accounts.action_log import ActionLog
from lichen.accounts.roles import AccountRoles
from lichen.gateway.admin.auth import OperatorAuth
from lichen.gateway.admin.routes import install_admin
from lichen.gateway.admin.service import AdminService, Operator
from lichen.gateway.services import GatewayServices
from lichen.storage.membership import MembershipRepository


def mount_admin(
    app: FastAPI,
    db: AsyncEngine,
    accounting: GatewayServices,
    members: MembershipRepository,
    network_key: Ed25519PrivateKey,
    *,
    public_url: str | None = None,
    serves_nodes: bool = False,
) -> AdminService:
    """Build the admin service from the gateway's services and mount ``/v1/admin`` on
    ``app`` (the composition roots' one call). ``serves_nodes``: ``app`` also takes the
    tracker's node connections (new invites may then name the URL a request reached)."""
    service = AdminService(
        members=members,
        accounts=accounting.accounts,
        ledger=accounting.ledger,
        network_key=network_key,
        actions=ActionLog(db, clock=accounting.clock),
        # Invites and members keep the trackers' time (admission checks expiry with it,
        # the revocation watcher polls by it), whatever clock the accounting runs on.
    )
    install_admin(
        app,
        service,
        OperatorAuth(accounting.keys, AccountRoles(db)),
        public_url=public_url,
        serves_nodes=serves_nodes,
    )
    return service


__all__ = ["AdminService", "Operator", "OperatorAuth", "install_admin", "mount_admin"]
