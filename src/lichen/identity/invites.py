"""Invite tokens: a network operator's signed, copy-pasteable permission to join.

A token is ``"lichen1."`` followed by the unpadded base64url of a canonical
msgpack :class:`Invite`. The invite is signed by the network key it names
(``b"lichen-invite-v1"`` + the msgpack of the invite with ``signature=b""``), so
a node can check a token offline, and :func:`check_invite` confirms it belongs
to the network the checker expects. A network with several trackers (sharing one
membership database) lists the others in ``other_tracker_urls``; a node dials them
in turn when one is unreachable. Counting uses against ``max_uses`` needs
shared state and is the tracker's job (its database), not this module's.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lichen.errors import ErrorCode, LichenError
from lichen.identity.signing import PUBLIC_KEY_SIZE, public_raw, sign, verify

__all__ = [
    "INVITE_DOMAIN",
    "MAX_TOKEN_CHARS",
    "MAX_TRACKER_URLS",
    "TOKEN_PREFIX",
    "Invite",
    "check_invite",
    "create_invite",
    "parse_invite",
]

TOKEN_PREFIX = "lichen1."
"""Start of every invite token; the digit is the token format version."""

INVITE_DOMAIN = b"lichen-invite-v1"
"""Domain-separation tag prepended to the signed bytes of every invite."""

MAX_TOKEN_CHARS = 4096
"""Longest token accepted; a real one is about 250 characters."""

MAX_TRACKER_URLS = 16
"""Most tracker URLs one invite may name (``tracker_url`` and the others together)."""

_URL_SCHEMES = frozenset({"ws", "wss", "http", "https"})


class Invite(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Permission, signed by a network key, to join that network.

    Fields with defaults are left out of the encoding while they hold the default,
    so a token made before such a field existed re-encodes (and verifies) unchanged.
    """

    invite_id: str  # random hex id; the tracker counts uses against it
    network_key: bytes  # raw Ed25519 public key of the network that issued the invite
    tracker_url: str  # where to dial, e.g. "wss://tracker.example.org/ws"
    roles: list[str]  # what the holder may join as, e.g. ["node"]
    max_uses: int  # how many joins the invite allows; 0 = unlimited
    expires_ms: int  # Unix milliseconds after which the invite is void; 0 = never
    issued_ms: int  # Unix milliseconds when the invite was created
    signature: bytes  # network-key signature over INVITE_DOMAIN + this struct with signature=b""
    # More trackers of the same network (sharing its membership), tried in turn after
    # tracker_url; empty in tokens made before a network could run several trackers.
    other_tracker_urls: list[str] = []

    def tracker_urls(self) -> list[str]:
        """Every tracker the holder may dial: ``tracker_url`` first, then the others."""
        return [self.tracker_url, *self.other_tracker_urls]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Invite)


def _signed_bytes(invite: Invite) -> bytes:
    return INVITE_DOMAIN + _encoder.encode(msgspec.structs.replace(invite, signature=b""))


def create_invite(
    network_key: Ed25519PrivateKey,
    *,
    tracker_url: str,
    roles: list[str],
    max_uses: int = 0,
    ttl_s: int | None = None,
    now_ms: int,
    other_tracker_urls: Sequence[str] = (),
) -> str:
    """Sign an invite and return its token (``lichen1.…``).

    ``max_uses=0`` allows any number of joins; ``ttl_s=None`` never expires;
    ``other_tracker_urls`` are more trackers of the network, dialled in turn after
    ``tracker_url``. Raises ``ValueError`` for an invite no one could use.
    """
    problem = _trackers_problem([tracker_url, *other_tracker_urls])
    if problem is not None:
        raise ValueError(problem)
    if not roles or not all(roles):
        raise ValueError("an invite needs at least one non-empty role")
    if max_uses < 0:
        raise ValueError("max_uses must be 0 (unlimited) or positive")
    if ttl_s is not None and ttl_s <= 0:
        raise ValueError("ttl_s must be positive, or None for no expiry")
    unsigned = Invite(
        invite_id=secrets.token_hex(16),
        network_key=public_raw(network_key),
        tracker_url=tracker_url,
        roles=list(roles),
        max_uses=max_uses,
        expires_ms=0 if ttl_s is None else now_ms + ttl_s * 1000,
        issued_ms=now_ms,
        signature=b"",
        other_tracker_urls=list(other_tracker_urls),
    )
    invite = msgspec.structs.replace(unsigned, signature=sign(network_key, _signed_bytes(unsigned)))
    payload = base64.urlsafe_b64encode(_encoder.encode(invite)).rstrip(b"=")
    token = TOKEN_PREFIX + payload.decode("ascii")
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"the tracker URLs make the token longer than {MAX_TOKEN_CHARS} chars")
    return token


def parse_invite(token: str) -> Invite:
    """Decode a token and check its signature against its own network key.

    Surrounding whitespace (from copy-paste) is ignored. Raises
    :class:`LichenError` ``INVITE_INVALID`` for a wrong prefix, bad base64,
    malformed or non-canonical msgpack, or a signature that does not verify.
    This does not check expiry or the network: use :func:`check_invite`.
    """
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise _invalid("invite token is too long")
    if not token.startswith(TOKEN_PREFIX):
        raise _invalid(f"not a Lichen invite (it should start with {TOKEN_PREFIX!r})")
    payload = token[len(TOKEN_PREFIX) :]
    try:
        raw = base64.b64decode(payload + "=" * (-len(payload) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid("invite token is damaged (bad base64); copy it again") from exc
    try:
        invite = _decoder.decode(raw)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError too
        raise _invalid("invite token is damaged (malformed contents); copy it again") from exc
    if _encoder.encode(invite) != raw:
        raise _invalid("invite token is not canonically encoded")
    _check_signature(invite)
    return invite


def check_invite(invite: Invite, *, expected_network_key: bytes | None, now_ms: int) -> None:
    """Refuse an invite that is forged, for another network, or expired.

    ``expected_network_key=None`` accepts any network (a node joining for the
    first time learns the network key from the invite). Raises
    :class:`LichenError` ``INVITE_INVALID``; expiry says ``"invite expired"``.
    """
    _check_signature(invite)
    if expected_network_key is not None and invite.network_key != expected_network_key:
        raise _invalid("invite is for another network")
    if invite.expires_ms and now_ms >= invite.expires_ms:
        raise _invalid("invite expired")


def _check_signature(invite: Invite) -> None:
    if len(invite.network_key) != PUBLIC_KEY_SIZE:
        raise _invalid("invite carries a network key of the wrong size")
    if not verify(invite.network_key, invite.signature, _signed_bytes(invite)):
        raise _invalid("invite signature does not verify (the token was altered or forged)")
    if invite.max_uses < 0 or invite.expires_ms < 0 or not invite.roles:
        raise _invalid("invite has out-of-range fields")
    problem = _trackers_problem(invite.tracker_urls())
    if problem is not None:
        raise _invalid(f"invite tracker URLs are unusable: {problem}")


def _trackers_problem(urls: list[str]) -> str | None:
    """Why an invite cannot name these trackers, or None if each looks usable."""
    if len(urls) > MAX_TRACKER_URLS:
        return f"at most {MAX_TRACKER_URLS} tracker URLs, not {len(urls)}"
    if len(set(urls)) != len(urls):
        return "a tracker URL is listed twice"
    for url in urls:
        problem = _url_problem(url)
        if problem is not None:
            return f"tracker URL {url[:80]!r}: {problem}"
    return None


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be dialled, or None if it looks usable."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "not a URL"
    if parts.scheme not in _URL_SCHEMES:
        return f"scheme must be one of {', '.join(sorted(_URL_SCHEMES))}"
    if not parts.hostname:
        return "no host"
    return None


def _invalid(message: str) -> LichenError:
    return LichenError(ErrorCode.INVITE_INVALID, message)
