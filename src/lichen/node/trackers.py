"""Which tracker a node dials next, when its network runs several.

Every tracker of a network admits every member (membership lives in the shared
database), so a node whose tracker is unreachable, or whose link to it was lost,
dials the next one at once, in turn. Only a full round of failures (every tracker
tried since the last backoff) makes the node wait before the next round, so a dead
tracker costs a node one failed dial, not a backoff. With one tracker each failure
is a full round: the node backs off between attempts as it always did.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["TrackerRotation", "display_url"]


class TrackerRotation:
    """Round-robin over a network's tracker URLs, counting failures per round."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = list(dict.fromkeys(u for u in urls if u))  # in order, each once
        if not self.urls:
            raise ValueError("a node needs at least one tracker URL")
        self._index = 0
        self._failed = 0  # attempts that failed since the last backoff or success

    @property
    def current(self) -> str:
        """The URL to dial now."""
        return self.urls[self._index]

    def failed(self) -> bool:
        """The current tracker failed (or the link to it was lost): move on to the next.

        Returns True when every tracker has failed since the last backoff: the caller
        backs off before dialling again (and a new round starts).
        """
        self._index = (self._index + 1) % len(self.urls)
        self._failed += 1
        if self._failed >= len(self.urls):
            self._failed = 0
            return True
        return False

    def joined(self) -> None:
        """A session was established on the current tracker: a new round starts."""
        self._failed = 0


def display_url(url: str) -> str:
    """``url`` for logs: scheme, host, port and path, without user info or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"
