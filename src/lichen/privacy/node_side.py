"""The node's side of privacy: check the network policy on join, send opted-in telemetry.

On every join the node verifies the policy the tracker signed (``Welcome.policy``),
logs it, and refuses to serve a network whose policy its operator has ruled out
(``LICHEN_REFUSE_POLICIES=open,dataset`` or ``--refuse-policy``): a
``LichenError(POLICY_FORBIDS)`` that the agent treats as final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypedDict

from lichen.config import Settings
from lichen.engines.base import Engine
from lichen.errors import ErrorCode, LichenError
from lichen.privacy.policy import Policy
from lichen.privacy.signing import verify_policy
from lichen.privacy.summary import headline
from lichen.privacy.telemetry import (
    DEFAULT_INTERVAL_S,
    TelemetryCounters,
    node_may_send,
    telemetry_enabled,
)
from lichen.wire.messages import Message

log = logging.getLogger(__name__)

UNSIGNED = "unsigned"  # refuse trackers that publish no policy at all


def parse_refusals(value: str | Iterable[str]) -> frozenset[str]:
    """``"open, dataset"`` or ``["open", "dataset"]`` -> ``{"open", "dataset"}``."""
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(item.strip().lower() for item in items if item.strip())


class NodePrivacy:
    """What one node agent knows and decides about the networks it joins."""

    def __init__(
        self,
        *,
        refuse: Iterable[str] = (),
        telemetry: bool = False,
        telemetry_interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.refuse = parse_refusals(refuse)
        self.telemetry = telemetry
        self.telemetry_interval_s = telemetry_interval_s
        self.counters = TelemetryCounters()
        self.policy: Policy | None = None

    def accept(self, signed_policy: bytes, network_key: bytes) -> Policy | None:
        """Verify and judge the network's policy; raise POLICY_FORBIDS to refuse it."""
        if not signed_policy:
            if UNSIGNED in self.refuse:
                raise self._refusal("the tracker publishes no signed policy")
            log.warning("the tracker publishes no network policy")
            self.policy = None
            return None
        policy, signed = verify_policy(signed_policy, network_key)
        log.info(
            "network policy %r (sha256 %s): %s", policy.name, signed.digest[:16], headline(policy)
        )
        if policy.name.lower() in self.refuse:
            raise self._refusal(f"the network's policy is {policy.name!r}")
        self.policy = policy
        return policy

    def _refusal(self, why: str) -> LichenError:
        message = (
            f"refusing to join: {why}, which this node's settings forbid "
            f"(refused policies: {', '.join(sorted(self.refuse))})"
        )
        log.error("%s", message)
        return LichenError(ErrorCode.POLICY_FORBIDS, message)

    @property
    def sends_telemetry(self) -> bool:
        return node_may_send(self.telemetry, self.policy)

    async def telemetry_loop(
        self, send: Callable[[Message], Awaitable[None]], engine: Engine
    ) -> None:
        """Send counters every interval while connected (only if opted in and accepted)."""
        if not self.sends_telemetry or self.policy is None:
            return
        allowed = self.policy.telemetry.counters
        while True:
            await asyncio.sleep(self.telemetry_interval_s)
            payload = self.counters.payload(
                allowed,
                tokens_per_s=engine.load().tokens_per_s,
                models=[m.name for m in engine.models()],
            )
            with contextlib.suppress(Exception):
                await send(payload)


class NodePrivacyOptions(TypedDict):
    refuse_policies: tuple[str, ...]
    telemetry: bool
    telemetry_interval_s: float


def node_privacy_options(settings: Settings) -> NodePrivacyOptions:
    """The ``NodeConfig`` fields that come from the privacy settings."""
    return NodePrivacyOptions(
        refuse_policies=tuple(sorted(parse_refusals(settings.refuse_policies))),
        telemetry=telemetry_enabled(settings.telemetry, settings.data_dir),
        telemetry_interval_s=settings.telemetry_interval_s,
    )
