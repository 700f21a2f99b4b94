"""What the UI needs from the network's privacy policy, behind one small protocol.

``NeutralPolicy`` is used when no policy is wired in: it states only what the
gateway itself does (request metadata, never prompt or answer text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from lichen.privacy.document import PolicyDocument, PrivacyClass


class PolicyView(Protocol):
    def summary(self) -> str:
        """One or two sentences shown beside the chat input."""
        ...

    def classes(self) -> list[PrivacyClass]:
        """Privacy classes a request may pick; empty when the policy offers no choice."""
        ...

    def has_public_feed(self) -> bool: ...

    def document(self) -> PolicyDocument | None: ...

    def disclosure(self) -> str | None:
        """A notice every page must show (policies that log prompts), else None."""
        ...


class FeedPost(Protocol):
    def feed_json(self) -> dict[str, Any]:
        """``{"id", "created_ms", "model", "prompt", "completion"}``; nothing about the sender."""
        ...


class FeedSource(Protocol):
    """Where the public feed's posts come from (the privacy feature's content store)."""

    async def feed(self, limit: int = 50) -> Sequence[FeedPost]: ...


NEUTRAL_SUMMARY = (
    "Your message is answered by a node on this network. "
    "The gateway records request metadata (model, token counts, timings), "
    "not prompts or answers."
)


class NeutralPolicy:
    def summary(self) -> str:
        return NEUTRAL_SUMMARY

    def classes(self) -> list[PrivacyClass]:
        return []

    def has_public_feed(self) -> bool:
        return False

    def document(self) -> PolicyDocument | None:
        return None

    def disclosure(self) -> str | None:
        return None
