"""Everything privacy needs in a gateway/tracker process, built from one policy file.

The composition roots (``lichen up``, ``lichen tracker``, ``lichen gateway``) call
:meth:`PrivacyRuntime.build` once and wire its parts in: the guard on the database
engine, the signed policy and telemetry sink into the tracker, the trust filter into
the scheduler, the pipeline into the completion service, the service into the app's
routes (:func:`lichen.web.privacy_routes.install_privacy`), and the retention sweeper
into the process's lifetime.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncEngine

from lichen.periodic import Periodic
from lichen.privacy.content import ContentRepository
from lichen.privacy.pipeline import PrivacyPipeline
from lichen.privacy.policy import Location, Policy, load_policy_document
from lichen.privacy.retention import RetentionSweeper
from lichen.privacy.signing import SignedPolicy, sign_policy
from lichen.privacy.storage_guard import PolicyGuard, install_guard
from lichen.privacy.summary import PrivacyPolicyView
from lichen.privacy.telemetry import TelemetryRepository, TelemetrySink

log = logging.getLogger(__name__)


@dataclass
class PrivacyService:
    """What the privacy routes serve: the policy, its signature, the kept content."""

    policy: Policy
    signed: SignedPolicy
    content: ContentRepository | None = None


@dataclass
class PrivacyRuntime:
    policy: Policy
    signed: SignedPolicy
    guard: PolicyGuard
    content: ContentRepository
    pipeline: PrivacyPipeline
    service: PrivacyService
    sweeper: Periodic
    telemetry_sink: TelemetrySink
    view: PrivacyPolicyView

    @classmethod
    def build(
        cls,
        *,
        data_dir: Path,
        network_key: Ed25519PrivateKey,
        db: AsyncEngine,
        locations: Iterable[Location] = ("gateway", "tracker"),
        sweep_every_s: float = 60.0,
    ) -> PrivacyRuntime:
        """Load ``<data_dir>/policy.toml`` (default preset ``private``), sign it, guard ``db``."""
        policy, document = load_policy_document(data_dir)
        signed = sign_policy(network_key, document)
        guard = PolicyGuard(policy, locations)
        install_guard(db, guard)
        content = ContentRepository(db)
        pipeline = PrivacyPipeline(policy, content)
        log.info("network policy %r (sha256 %s)", policy.name, signed.digest[:16])
        return cls(
            policy=policy,
            signed=signed,
            guard=guard,
            content=content,
            pipeline=pipeline,
            service=PrivacyService(policy, signed, content),
            sweeper=RetentionSweeper(db, policy).task(sweep_every_s),
            telemetry_sink=TelemetrySink(policy, TelemetryRepository(db)),
            view=PrivacyPolicyView(policy, document.decode("utf-8")),
        )

    @property
    def wire_policy(self) -> bytes:
        """The signed policy as it travels in ``Welcome.policy``."""
        return self.signed.encode()

    async def start(self) -> None:
        await self.pipeline.warm()
        self.sweeper.start()

    async def stop(self) -> None:
        await self.sweeper.stop()
