"""Which tracker a node belongs to: learned from its invite, remembered in its data dir.

``lichen node --join TOKEN`` checks the token's signature (offline: the invite
is signed by the network key it names), pins that network key and remembers
the trackers' URLs in ``<data dir>/join.json``; later starts need no token. The
tracker, not the node, decides whether the invite is still valid (expiry, uses,
revocation), so an expired token still reaches the tracker and is refused there
with a typed error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from lichen.clock import now_ms
from lichen.errors import ErrorCode, LichenError
from lichen.identity._files import atomic_write, ensure_private_dir
from lichen.identity.invites import parse_invite
from lichen.tracker.service import NODE_PATH

log = logging.getLogger(__name__)

JOIN_FILE = "join.json"


@dataclass(frozen=True)
class JoinTarget:
    """Where to dial and which network key the tracker must prove."""

    tracker_url: str  # ws(s)://host:port/v1/node/connect
    network_key: bytes  # pinned raw Ed25519 public key
    invite: str = ""  # the token, presented until the tracker knows this device
    other_tracker_urls: tuple[str, ...] = ()  # more trackers of the network, dialled in turn

    @property
    def tracker_urls(self) -> tuple[str, ...]:
        """Every tracker to dial: ``tracker_url`` first, then the others."""
        return (self.tracker_url, *self.other_tracker_urls)


def dial_url(url: str) -> str:
    """An invite's tracker URL as the WebSocket URL a node dials."""
    url = url.rstrip("/")
    if url.startswith("http"):
        url = "ws" + url.removeprefix("http")
    return url if url.endswith(NODE_PATH) else url + NODE_PATH


def _dial_urls(urls: list[str]) -> list[str]:
    """``urls`` as WebSocket URLs, in order, each once."""
    return list(dict.fromkeys(dial_url(url) for url in urls))


def resolve_join(data_dir: Path, token: str | None) -> JoinTarget:
    """The join target from ``token`` (remembered for next time), else from the data dir."""
    path = data_dir / JOIN_FILE
    if token:
        invite = parse_invite(token)  # signature only; the tracker enforces the rest
        first, *others = _dial_urls(invite.tracker_urls())
        target = JoinTarget(first, invite.network_key, token.strip(), tuple(others))
        record = {
            "tracker_url": target.tracker_url,
            "network_key": target.network_key.hex(),
            "joined_ms": now_ms(),
        }
        if others:  # absent when there is one tracker, as in files written before
            record["other_tracker_urls"] = others
        ensure_private_dir(data_dir, fix_existing=False)
        atomic_write(path, json.dumps(record).encode("utf-8"), overwrite=True)
        return target
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        others = record.get("other_tracker_urls", [])
        if not isinstance(others, list) or not all(isinstance(u, str) for u in others):
            raise TypeError("other_tracker_urls is not a list of URLs")
        first, *rest = _dial_urls([str(record["tracker_url"]), *others])
        return JoinTarget(first, bytes.fromhex(str(record["network_key"])), "", tuple(rest))
    except FileNotFoundError:
        raise LichenError(
            ErrorCode.INVALID_REQUEST,
            "this node has not joined a network yet: run `lichen node --join TOKEN` "
            "with an invite from the network's operator",
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LichenError(
            ErrorCode.INTERNAL, f"{path} is unreadable ({type(exc).__name__}); join again"
        ) from exc
