"""Who may join: membership kept in the tracker's database, decided at the handshake.

:class:`InviteAdmission` implements :class:`lichen.transport.handshake.Admission`.
It runs after the device proved its key and its certificate verified, and before
the tracker sends ``Welcome``, so a refused node never sees a job:

- a known device: admitted if approved; ``IDENTITY_REVOKED`` if revoked;
  ``MEMBERSHIP_PENDING`` while a private network's operator has not approved it;
- a device certified by the operator's own account key: admitted as ``owner``;
- a new device with an invite: the invite must be signed by this network, unexpired,
  not revoked, not used up and for the ``node`` role (``INVITE_INVALID``); its use is
  counted atomically with the device's registration;
- a new device without an invite: refused (``IDENTITY_UNKNOWN``) on a private network;
  auto-admitted on a public one, at most ``per_ip`` new devices per IP per hour
  (``RATE_LIMITED``; :class:`AdmissionLimiter`, shared by every tracker through
  ``redis_url``). The IP is only counted under a keyed hash, for that window.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from lichen.clock import Clock, now_ms, system_clock
from lichen.errors import ErrorCode, LichenError
from lichen.http.auth import address_key
from lichen.identity.certs import DeviceCertificate
from lichen.identity.invites import check_invite, parse_invite
from lichen.identity.signing import peer_id
from lichen.identity.trust import TrustLevel
from lichen.periodic import Periodic
from lichen.ratelimit import MemoryBackend, RateLimiter, Window, limiter_for
from lichen.storage.membership import MemberRecord, MembershipRepository, MemberStatus

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from lichen.config import Settings

log = logging.getLogger(__name__)

NetworkMode = Literal["private", "public"]
NODE_ROLE = "node"


class AdmissionLimiter:
    """New devices admitted per IP and window (an hour), counted by a :class:`RateLimiter`.

    One fixed window per IP (:class:`lichen.ratelimit.Window`): in this process
    (memory bounded by ``max_ips`` counters), or in Redis when the limiter shares
    one (:meth:`from_settings` with ``redis_url``), so several trackers admit at
    most ``per_window`` new devices per IP between them. The IP is never a counter
    name: it is hashed with ``secret`` (a per-network key), so Redis holds no
    addresses. A store outage admits (fail open) or refuses with
    ``SERVICE_UNAVAILABLE`` (``limits_fail_closed``); a node retries either way.
    """

    def __init__(
        self,
        per_window: int,
        *,
        window_s: int = 3600,
        max_ips: int = 100_000,
        clock: Clock = system_clock,
        limiter: RateLimiter | None = None,
        secret: bytes = b"",
    ) -> None:
        self.window = Window(per_window, window_s)
        self.limiter = limiter or RateLimiter(MemoryBackend(max_keys=max_ips), clock=clock)
        self._secret = hashlib.sha256(b"lichen-admissions\x00" + secret).digest()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        network_key: Ed25519PrivateKey,
        *,
        limiter: RateLimiter | None = None,
        clock: Clock = system_clock,
    ) -> AdmissionLimiter:
        """``admissions_per_ip_hour`` counted by ``limiter`` (the process's shared one, e.g.
        the gateway services'), else by a new one for ``settings`` (Redis when ``redis_url``
        is set; then the caller closes it with :meth:`aclose`)."""
        return cls(
            settings.admissions_per_ip_hour,
            limiter=limiter or limiter_for(settings, clock=clock),
            secret=address_key(network_key),
        )

    @property
    def per_window(self) -> int:
        return self.window.limit

    def subject(self, ip: str) -> str:
        """The counter's name for ``ip``: a keyed hash, never the address itself."""
        return "adm:" + hmac.new(self._secret, ip.encode(), hashlib.sha256).hexdigest()[:32]

    async def take(self, ip: str) -> None:
        """Count one admission from ``ip``, or raise ``RATE_LIMITED`` if its window is full
        (nothing counted then). One atomic step, so concurrent trackers cannot both
        admit the last one."""
        count = await self.limiter.take(self.subject(ip), self.window)
        if count is not None and not count.allowed:
            raise LichenError(
                ErrorCode.RATE_LIMITED,
                f"too many new nodes from this address (at most {self.per_window} per "
                f"{self.window.period_s / 3600:g} h); try again later or ask for an invite",
                headers={"Retry-After": str(count.retry_after_s)},
            )

    async def aclose(self) -> None:
        await self.limiter.aclose()


class SeenBuffer:
    """Coalesces "this device was seen" writes into one batch every ``flush_s``.

    Every admission and every disconnect updates a member's last-seen time; after a
    tracker restart thousands of nodes reconnect at once, and a write each would
    queue behind one another. Last-seen is informational, so it is buffered.
    """

    def __init__(self, members: MembershipRepository, *, flush_s: float = 5.0) -> None:
        self.members = members
        self.flush_s = flush_s
        self._pending: dict[str, tuple[int, str | None]] = {}

    def note(self, peer_id: str, now_ms: int, name: str | None = None) -> None:
        _, known = self._pending.get(peer_id, (0, None))
        self._pending[peer_id] = (now_ms, name if name is not None else known)

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        try:
            await self.members.touch_many(pending)
        except Exception as exc:  # informational data: keep it for the next try
            log.warning("could not record last-seen times: %s", type(exc).__name__)
            for pid, value in pending.items():
                self._pending.setdefault(pid, value)

    async def run(self) -> None:
        """Flush every ``flush_s`` until cancelled (then call :meth:`flush` once more)."""
        await Periodic(
            "last-seen-writer",
            self.flush,
            self.flush_s,
            log=log,
            failure="could not record last-seen times",
            delay_first=True,
        ).run()


def remote_ip(remote: str) -> str:
    """The host part of ``host:port`` (IPv6 ``[::1]:port`` too)."""
    host = remote.rsplit(":", 1)[0] if ":" in remote else remote
    return host.strip("[]")


class InviteAdmission:
    """Admission against the membership tables (see the module docstring)."""

    def __init__(
        self,
        members: MembershipRepository,
        *,
        network_key: bytes,
        owner_account: bytes | None = None,
        mode: NetworkMode = "private",
        limiter: AdmissionLimiter | None = None,
        seen: SeenBuffer | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.members = members
        self.seen = seen
        self.network_key = network_key
        self.owner_account = owner_account
        self.mode = mode
        self.limiter = limiter or AdmissionLimiter(10)
        self._clock = clock
        # Approved members by peer id, so that reconnecting nodes (all of them, after a
        # tracker restart) need no database read. Status changes made by the operator's
        # CLI reach it through the watcher (``forget``); see lichen.tracker.revocations.
        self._approved: dict[str, MemberRecord] = {}
        # One registration at a time (first joins are rare): a node opens its job link
        # and its model-transfer link together, and both must not spend the invite.
        self._registering = asyncio.Lock()

    async def preload(self) -> int:
        """Load every approved member into memory; returns how many."""
        self._approved = {m.peer_id: m for m in await self.members.approved()}
        return len(self._approved)

    def forget(self, peer_id: str) -> None:
        """The member's status changed elsewhere: read it from the database next time."""
        self._approved.pop(peer_id, None)

    async def admit(self, cert: DeviceCertificate, invite: str, remote: str) -> str:
        pid = peer_id(cert.device_key)
        now = self._clock()
        member = self._approved.get(pid) or await self.members.member(pid)
        if member is None:
            member = await self._register_once(pid, cert, invite, remote, now)
        else:
            await self._check_known(member, cert, now)
        if member.status == "approved":
            self._approved[pid] = member
        if member.status == "pending":
            raise LichenError(
                ErrorCode.MEMBERSHIP_PENDING,
                f"node {pid} is waiting for approval; the operator runs: "
                f"lichen network approve {pid}",
            )
        return member.trust

    async def _register_once(
        self, pid: str, cert: DeviceCertificate, invite: str, remote: str, now: int
    ) -> MemberRecord:
        """Register ``pid``, or, if a concurrent link registered it first, check that."""
        async with self._registering:
            member = await self.members.member(pid)
            if member is None:
                return await self._register(pid, cert, invite, remote, now)
        await self._check_known(member, cert, now)
        return member

    async def _check_known(self, member: MemberRecord, cert: DeviceCertificate, now: int) -> None:
        if member.status == "revoked":
            raise LichenError(ErrorCode.IDENTITY_REVOKED, f"node {member.peer_id} was revoked")
        if member.account_key != cert.account_key:
            raise LichenError(
                ErrorCode.IDENTITY_UNKNOWN,
                f"node {member.peer_id} joined under another account key",
            )
        if self.seen is not None:
            self.seen.note(member.peer_id, now, cert.name)
        else:
            await self.members.touch(member.peer_id, now_ms=now, name=cert.name)

    async def _register(
        self, pid: str, cert: DeviceCertificate, token: str, remote: str, now: int
    ) -> MemberRecord:
        trust = TrustLevel.COMMUNITY
        status: MemberStatus = "approved"
        invite_id: str | None = None
        ip = remote_ip(remote)
        if self.owner_account is not None and cert.account_key == self.owner_account:
            trust = TrustLevel.OWNER
        elif token:
            invite = parse_invite(token)
            check_invite(invite, expected_network_key=self.network_key, now_ms=now)
            if NODE_ROLE not in invite.roles:
                raise LichenError(ErrorCode.INVITE_INVALID, "invite does not grant the node role")
            invite_id = invite.invite_id
            status = "pending" if self.mode == "private" else "approved"
        elif self.mode == "public":
            await self.limiter.take(ip)  # counted now: atomic across trackers
        else:
            raise LichenError(
                ErrorCode.IDENTITY_UNKNOWN,
                f"node {pid} is not a member of this network; join with an invite "
                "(lichen node --join TOKEN)",
            )
        record = await self.members.join(
            MemberRecord(
                peer_id=pid,
                device_key=cert.device_key,
                account_key=cert.account_key,
                name=cert.name,
                trust=trust,
                status=status,
                invite_id=invite_id,
                first_seen_ms=now,
                last_seen_ms=now,
            ),
            now_ms=now,
        )
        log.info(
            "registered node %s (%s) as %s, %s%s",
            pid,
            cert.name or "unnamed",
            record.trust,
            record.status,
            f", invite {invite_id[:8]}" if invite_id else "",
        )
        return record
