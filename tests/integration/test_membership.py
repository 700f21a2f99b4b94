"""Membership against a real SQLite database: invites, members, and InviteAdmission."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.clock import ManualClock
from lichen.errors import ErrorCode, LichenError
from lichen.identity.certs import DeviceCertificate, issue_device_certificate
from lichen.identity.certs import verify_device_certificate as verify_cert
from lichen.identity.invites import create_invite, parse_invite
from lichen.identity.signing import generate_key, peer_id, public_raw
from lichen.identity.store import now_ms
from lichen.ratelimit import MemoryBackend
from lichen.storage.engine import create_engine, migrate
from lichen.storage.membership import InviteRecord, MemberRecord, MembershipRepository
from lichen.tracker.membership import AdmissionLimiter, InviteAdmission, SeenBuffer, remote_ip
from lichen.tracker.revocations import RevocationWatcher

URL = "ws://127.0.0.1:8470/v1/node/connect"


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[MembershipRepository]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'lichen.db'}"
    await migrate(url)
    engine = create_engine(url)
    yield MembershipRepository(engine)
    await engine.dispose()


class Network:
    """A network key plus helpers to mint invites (recorded in the DB) and devices."""

    def __init__(self, repo: MembershipRepository) -> None:
        self.repo = repo
        self.key = generate_key()
        self.owner = generate_key()

    @property
    def public(self) -> bytes:
        return public_raw(self.key)

    async def invite(
        self,
        *,
        max_uses: int = 1,
        ttl_s: int | None = 3600,
        roles: list[str] | None = None,
        issued_ms: int | None = None,
        key: Ed25519PrivateKey | None = None,
        record: bool = True,
    ) -> str:
        token = create_invite(
            key or self.key,
            tracker_url=URL,
            roles=roles or ["node"],
            max_uses=max_uses,
            ttl_s=ttl_s,
            now_ms=issued_ms if issued_ms is not None else now_ms(),
        )
        invite = parse_invite(token)
        if record:
            await self.repo.add_invite(InviteRecord.of(invite))
        return token

    def admission(self, mode: str = "private", per_ip: int = 10) -> InviteAdmission:
        return InviteAdmission(
            self.repo,
            network_key=self.public,
            owner_account=public_raw(self.owner),
            mode="public" if mode == "public" else "private",
            limiter=AdmissionLimiter(per_ip),
        )


def device(account: Ed25519PrivateKey | None = None, name: str = "n") -> DeviceCertificate:
    raw = issue_device_certificate(
        account or generate_key(), public_raw(generate_key()), name=name, now_ms=now_ms()
    )
    return verify_cert(raw, now_ms=now_ms())


@pytest.fixture
async def membership_net(repo: MembershipRepository) -> Network:
    return Network(repo)


async def refused(coro: object) -> LichenError:
    with pytest.raises(LichenError) as info:
        await coro  # type: ignore[misc]
    return info.value


# --- private networks -------------------------------------------------------------------


async def test_owner_devices_join_without_an_invite(membership_net: Network) -> None:
    cert = device(membership_net.owner, "mine")
    assert await membership_net.admission().admit(cert, "", "127.0.0.1:5") == "owner"
    member = await membership_net.repo.member(peer_id(cert.device_key))
    assert member is not None and member.status == "approved" and member.trust == "owner"


async def test_unknown_device_without_invite_is_identity_unknown(membership_net: Network) -> None:
    error = await refused(membership_net.admission().admit(device(), "", "10.0.0.1:1"))
    assert error.code is ErrorCode.IDENTITY_UNKNOWN
    assert await membership_net.repo.members() == []  # nothing recorded for a refused stranger


async def test_invited_device_waits_for_approval_then_joins(membership_net: Network) -> None:
    admission = membership_net.admission()
    cert = device(name="volunteer")
    pid = peer_id(cert.device_key)
    token = await membership_net.invite(max_uses=1)
    error = await refused(admission.admit(cert, token, "10.0.0.1:1"))
    assert error.code is ErrorCode.MEMBERSHIP_PENDING
    assert f"lichen network approve {pid}" in error.message
    # Retrying while pending neither admits it nor uses the invite again.
    error = await refused(admission.admit(cert, token, "10.0.0.1:1"))
    assert error.code is ErrorCode.MEMBERSHIP_PENDING
    (invite,) = await membership_net.repo.invites()
    assert invite.uses == 1
    assert await membership_net.repo.set_status(pid, "approved", now_ms=now_ms())
    assert await admission.admit(cert, "", "10.0.0.1:1") == "community"
    member = await membership_net.repo.member(pid)
    assert member is not None and (member.name, member.invite_id) == ("volunteer", invite.id)


async def test_revoked_device_is_refused_even_with_a_fresh_invite(membership_net: Network) -> None:
    admission = membership_net.admission("public")
    cert = device()
    pid = peer_id(cert.device_key)
    assert await admission.admit(cert, await membership_net.invite(), "10.0.0.1:1") == "community"
    await membership_net.repo.set_status(pid, "revoked", now_ms=now_ms())
    # The tracker's watcher sees the change in the database and tells admission.
    watcher = RevocationWatcher(membership_net.repo, _never_connected, forget=admission.forget)
    watcher._since = 0
    await watcher.poll_once()
    error = await refused(admission.admit(cert, await membership_net.invite(), "10.0.0.1:1"))
    assert error.code is ErrorCode.IDENTITY_REVOKED


async def _never_connected(_pid: str, _error: LichenError) -> bool:
    return False


async def test_approved_members_are_admitted_from_memory(
    membership_net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = device()
    await membership_net.admission("public").admit(cert, "", "10.0.0.1:1")
    restarted = membership_net.admission("private")  # a fresh tracker process
    assert await restarted.preload() == 1

    async def no_reads(_pid: str) -> None:
        raise AssertionError("a preloaded member must not cost a database read")

    monkeypatch.setattr(membership_net.repo, "member", no_reads)
    assert await restarted.admit(cert, "", "10.0.0.1:1") == "community"


async def test_known_device_under_another_account_is_refused(membership_net: Network) -> None:
    admission = membership_net.admission("public")
    cert = device()
    await admission.admit(cert, "", "10.0.0.1:1")
    other = verify_cert(
        issue_device_certificate(generate_key(), cert.device_key, now_ms=now_ms()),
        now_ms=now_ms(),
    )
    error = await refused(admission.admit(other, "", "10.0.0.1:1"))
    assert error.code is ErrorCode.IDENTITY_UNKNOWN


# --- invites ----------------------------------------------------------------------------


async def test_expired_invite_is_refused(membership_net: Network) -> None:
    token = await membership_net.invite(ttl_s=1, issued_ms=now_ms() - 10_000)
    error = await refused(membership_net.admission("public").admit(device(), token, "10.0.0.1:1"))
    assert error.code is ErrorCode.INVITE_INVALID and "expired" in error.message


async def test_over_used_invite_is_refused(membership_net: Network) -> None:
    admission = membership_net.admission("public")
    token = await membership_net.invite(max_uses=2)
    for _ in range(2):
        assert await admission.admit(device(), token, "10.0.0.1:1") == "community"
    error = await refused(admission.admit(device(), token, "10.0.0.1:1"))
    assert error.code is ErrorCode.INVITE_INVALID and "used up" in error.message
    (invite,) = await membership_net.repo.invites()
    assert invite.uses == 2


async def test_concurrent_joins_cannot_overuse_an_invite(membership_net: Network) -> None:
    admission = membership_net.admission("public")
    token = await membership_net.invite(max_uses=3)
    results = await asyncio.gather(
        *(admission.admit(device(), token, f"10.0.0.{i}:1") for i in range(8)),
        return_exceptions=True,
    )
    admitted = [r for r in results if r == "community"]
    codes = {r.code for r in results if isinstance(r, LichenError)}
    assert len(admitted) == 3 and codes == {ErrorCode.INVITE_INVALID}
    assert len(await membership_net.repo.members()) == 3


async def test_two_links_of_one_device_spend_a_single_use_invite_once(
    membership_net: Network,
) -> None:
    """A node opens its job link and its model-transfer link at once, with one invite."""
    admission = membership_net.admission("public")
    token = await membership_net.invite(max_uses=1)
    cert = device()
    results = await asyncio.gather(
        *(admission.admit(cert, token, "10.0.0.1:1") for _ in range(2)), return_exceptions=True
    )
    assert results == ["community", "community"]
    (invite,) = await membership_net.repo.invites()
    assert invite.uses == 1
    error = await refused(admission.admit(device(), token, "10.0.0.2:1"))
    assert error.code is ErrorCode.INVITE_INVALID


async def test_foreign_revoked_unknown_wrong_role_and_tampered_invites(
    membership_net: Network,
) -> None:
    admission = membership_net.admission("public")
    foreign = await membership_net.invite(key=generate_key())
    revoked = await membership_net.invite()
    await membership_net.repo.revoke_invite(parse_invite(revoked).invite_id)
    unknown = await membership_net.invite(record=False)  # signed by this network, but not in its DB
    wrong_role = await membership_net.invite(roles=["gateway"])
    good = await membership_net.invite()
    tampered = good[:-6] + ("A" if good[-6] != "A" else "B") + good[-5:]
    cases = {
        "foreign": (foreign, "another network"),
        "revoked": (revoked, "revoked"),
        "unknown": (unknown, "unknown invite"),
        "wrong role": (wrong_role, "node role"),
        "tampered": (tampered, ""),
    }
    for name, (token, words) in cases.items():
        error = await refused(admission.admit(device(), token, "10.0.0.1:1"))
        assert error.code is ErrorCode.INVITE_INVALID, name
        assert words in error.message, (name, error.message)
    assert await membership_net.repo.members() == []


# --- public networks --------------------------------------------------------------------


async def test_public_network_admits_strangers_with_a_per_ip_limit(membership_net: Network) -> None:
    admission = membership_net.admission("public", per_ip=2)
    for _ in range(2):
        assert await admission.admit(device(), "", "10.0.0.1:4000") == "community"
    error = await refused(admission.admit(device(), "", "10.0.0.1:4001"))
    assert error.code is ErrorCode.RATE_LIMITED
    assert await admission.admit(device(), "", "10.0.0.2:4000") == "community"  # another IP
    # Known devices reconnect from the limited IP without counting against it.
    first = (await membership_net.repo.members())[0]
    cert = DeviceCertificate(
        device_key=first.device_key,
        account_key=first.account_key,
        issued_ms=0,
        expires_ms=0,
        name="",
        signature=b"",
    )
    assert await admission.admit(cert, "", "10.0.0.1:4002") == "community"


async def test_limiter_window_resets_and_memory_is_bounded() -> None:
    clock = ManualClock(0.0)
    limiter = AdmissionLimiter(1, window_s=60, max_ips=2, clock=clock)
    await limiter.take("a")
    error = await refused(limiter.take("a"))
    assert error.code is ErrorCode.RATE_LIMITED and error.headers["Retry-After"] == "60"
    clock.advance(61)
    await limiter.take("a")  # the next window
    await limiter.take("b")
    await limiter.take("c")
    backend = limiter.limiter.backend
    assert isinstance(backend, MemoryBackend) and len(backend) == 2  # oldest counters dropped
    assert "10.0.0.1" not in limiter.subject("10.0.0.1")  # counted under a keyed hash


@pytest.mark.parametrize(
    ("remote", "ip"),
    [("10.1.2.3:5000", "10.1.2.3"), ("[::1]:80", "::1"), ("?", "?"), ("host", "host")],
)
def test_remote_ip(remote: str, ip: str) -> None:
    assert remote_ip(remote) == ip


# --- repository -------------------------------------------------------------------------


async def test_find_by_prefix_and_name(membership_net: Network) -> None:
    admission = membership_net.admission("public")
    a, b = device(name="alpha"), device(name="beta")
    await admission.admit(a, "", "10.0.0.1:1")
    await admission.admit(b, "", "10.0.0.2:1")
    pid = peer_id(a.device_key)
    assert (await membership_net.repo.find_member(pid[:12])).peer_id == pid
    assert (await membership_net.repo.find_member("beta")).peer_id == peer_id(b.device_key)
    error = await refused(membership_net.repo.find_member("lp-"))
    assert error.code is ErrorCode.INVALID_REQUEST  # ambiguous
    error = await refused(membership_net.repo.find_member("nobody"))
    assert error.code is ErrorCode.NOT_FOUND
    await membership_net.invite()
    (invite,) = await membership_net.repo.invites()
    assert (await membership_net.repo.find_invite(invite.id[:6])).id == invite.id


async def test_member_records_round_trip(repo: MembershipRepository) -> None:
    record = MemberRecord(
        peer_id="lp-x",
        device_key=b"\x01" * 32,
        account_key=b"\x02" * 32,
        name="n",
        trust="community",
        status="pending",
        invite_id=None,
        first_seen_ms=5,
        last_seen_ms=5,
    )
    await repo.join(record, now_ms=5)
    assert await repo.join(record, now_ms=6) == (await repo.member("lp-x"))  # idempotent
    await repo.touch("lp-x", now_ms=9, name="renamed")
    stored = await repo.member("lp-x")
    assert stored is not None
    assert (stored.device_key, stored.name, stored.last_seen_ms) == (b"\x01" * 32, "renamed", 9)


async def test_revocation_watcher_disconnects_only_revoked_connected_nodes(
    membership_net: Network,
) -> None:
    admission = membership_net.admission("public")
    certs = [device(name=f"n{i}") for i in range(3)]
    for cert in certs:
        await admission.admit(cert, "", "10.0.0.1:1")
    pids = [peer_id(c.device_key) for c in certs]
    connected = {pids[0], pids[1]}
    dropped: list[tuple[str, ErrorCode]] = []

    async def disconnect(pid: str, error: LichenError) -> bool:
        if pid not in connected:
            return False
        dropped.append((pid, error.code))
        connected.discard(pid)
        return True

    watcher = RevocationWatcher(membership_net.repo, disconnect)
    assert await watcher.poll_once() == []
    for pid in (pids[0], pids[2]):  # pids[2] is revoked but not connected
        await membership_net.repo.set_status(pid, "revoked", now_ms=now_ms())
    assert await watcher.poll_once() == [pids[0]]
    assert dropped == [(pids[0], ErrorCode.IDENTITY_REVOKED)]
    assert await watcher.poll_once() == []  # already gone


async def test_last_seen_is_written_in_batches(membership_net: Network) -> None:
    admission = membership_net.admission("public")
    certs = [device(name=f"n{i}") for i in range(3)]
    for cert in certs:
        await admission.admit(cert, "", "10.0.0.1:1")
    seen = SeenBuffer(membership_net.repo)
    buffered = membership_net.admission("public")
    buffered.seen = seen
    await buffered.admit(certs[1], "", "10.0.0.1:1")  # a reconnect: noted, not written yet
    seen.note(peer_id(certs[2].device_key), 123)
    before = {m.peer_id: m.last_seen_ms for m in await membership_net.repo.members()}
    assert before[peer_id(certs[2].device_key)] != 123
    await seen.flush()
    after = {m.peer_id: m for m in await membership_net.repo.members()}
    assert after[peer_id(certs[2].device_key)].last_seen_ms == 123
    assert after[peer_id(certs[1].device_key)].last_seen_ms >= before[peer_id(certs[1].device_key)]
    assert after[peer_id(certs[1].device_key)].name == "n1"
    await seen.flush()  # nothing pending: a no-op
