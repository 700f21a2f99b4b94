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
from pathlib import Path
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
    telemetry_opt_in,
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
        telemetry: bool | None = False,
        telemetry_interval_s: float = DEFAULT_INTERVAL_S,
        settings_dir: Path | None = None,
    ) -> None:
        self.refuse = parse_refusals(refuse)
        self.telemetry = telemetry  # None: follow the saved setting in settings_dir, live
        self.settings_dir = settings_dir
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
    def opted_in(self) -> bool:
        if self.telemetry is not None or self.settings_dir is None:
            return bool(self.telemetry)
        return telemetry_opt_in(self.settings_dir)  # the web UI's node page may flip it

    @property
    def sends_telemetry(self) -> bool:
        return node_may_send(self.opted_in, self.policy)

    async def telemetry_loop(
        self, send: Callable[[Message], Awaitable[None]], engine: Engine
    ) -> None:
        """Send counters every interval while connected (only if opted in and accepted)."""
        if self.policy is None or not self.policy.telemetry.opt_in:
            return
        allowed = self.policy.telemetry.counters
        while True:
            await asyncio.sleep(self.telemetry_interval_s)
            if not self.opted_in:
                continue
            payload = self.counters.payload(
                allowed,
                tokens_per_s=engine.load().tokens_per_s,
                models=[m.name for m in engine.models()],
            )
            with contextlib.suppress(Exception):
                await send(payload)


class NodePrivacyOptions(TypedDict):
    refuse_policies: tuple[str, ...]
    telemetry: bool | None
    telemetry_interval_s: float
    settings_dir: Path


def node_privacy_options(settings: Settings) -> NodePrivacyOptions:
    """The ``NodeConfig`` fields that come from the privacy settings."""
    return NodePrivacyOptions(
        refuse_policies=tuple(sorted(parse_refusals(settings.refuse_policies))),
        telemetry=settings.telemetry,  # None: the saved setting, re-read while running
        telemetry_interval_s=settings.telemetry_interval_s,
        settings_dir=settings.data_dir,
    )
