"""The gateway role's builder: scheduler, router, completion service and the HTTP app.

:func:`build_gateway` wires the OpenAI-compatible API over whatever node registry it
is handed: in ``lichen tracker`` (and ``lichen up``) that is the in-process tracker's
registry, but nothing here needs a :class:`~lichen.tracker.service.TrackerService`,
so a gateway process can schedule over a directory of nodes held elsewhere. Every
collaborator is a parameter; nothing is patched onto an object after it is built.
The gateway has no background work of its own: what it is handed (accounting,
privacy, audits) is started and stopped by whoever built it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from lichen.config import Settings
from lichen.gateway.app import GatewayDeps, create_app
from lichen.gateway.body_limit import BodyLimits
from lichen.gateway.completions import AnswerTap, CompletionService, RecordUsage
from lichen.gateway.hooks import RequestPipeline
from lichen.gateway.limits import RequestLimits
from lichen.gateway.metrics import GatewayMetrics
from lichen.gateway.origin import HostPolicy
from lichen.gateway.services import GatewayServices
from lichen.http.operator import OperatorGate
from lichen.models.catalog import lookup as catalog_lookup
from lichen.reputation.book import Reputation
from lichen.routing.router import DEFAULT_FIRST_TOKEN_TIMEOUT_S, DEFAULT_STALL_TIMEOUT_S, Router
from lichen.routing.scheduler import Scheduler
from lichen.tracker.registry import Registry

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024  # the harnesses' bound; `lichen tracker` uses settings
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class GatewayOptions:
    """The gateway's knobs. The defaults are the classes' own; :meth:`from_settings` is
    what ``lichen tracker`` serves with."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    timeout_s: float = DEFAULT_TIMEOUT_S
    first_token_timeout_s: float | None = DEFAULT_FIRST_TOKEN_TIMEOUT_S
    stall_timeout_s: float | None = DEFAULT_STALL_TIMEOUT_S
    limits: RequestLimits | None = None  # None: RequestLimits() defaults
    body_limits: BodyLimits | None = None  # None: max_request_bytes for inference
    hosts: HostPolicy | None = None  # None: any Host header is served
    affinity: bool = True  # prefix affinity (LICHEN_AFFINITY)
    queue_per_slot: float | None = None  # None: the nodes' own queues decide
    queue_wait_s: float | None = None  # None: a busy node's expected wait is not checked
    catalog_aliases: bool = False  # "smollm2" names smollm2-135m, as the CLI's --model does

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayOptions:
        return cls(
            max_request_bytes=settings.max_request_bytes,
            timeout_s=settings.request_timeout_s,
            first_token_timeout_s=settings.first_token_timeout_s,
            stall_timeout_s=settings.stall_timeout_s,
            limits=RequestLimits.from_settings(settings),
            body_limits=BodyLimits.from_settings(settings),
            hosts=HostPolicy.from_settings(settings),
            affinity=settings.affinity,
            queue_per_slot=settings.queue_per_slot,
            queue_wait_s=settings.queue_wait_s,
            catalog_aliases=True,
        )


@dataclass
class Gateway:
    """A built gateway: its app and the services behind it."""

    app: FastAPI
    completions: CompletionService
    scheduler: Scheduler
    metrics: GatewayMetrics | None = None
    health_checks: list[Callable[[], str | None]] = field(default_factory=list)


def build_gateway(
    options: GatewayOptions,
    *,
    registry: Registry,
    reputation: Reputation | None = None,
    record: RecordUsage | None = None,
    accounting: GatewayServices | None = None,
    pipeline: RequestPipeline | None = None,
    trust_for: Callable[[str], Collection[str]] | None = None,
    blocked: Callable[[str], bool] | None = None,
    audits: AnswerTap | None = None,
    metrics: CollectorRegistry | None = None,
    operator: OperatorGate | None = None,
    health_checks: list[Callable[[], str | None]] | None = None,
    started: float | None = None,
) -> Gateway:
    """The gateway over ``registry``: the nodes the scheduler ranks, by ``reputation``.

    ``pipeline`` and ``trust_for`` come from the privacy policy, ``blocked`` and
    ``audits`` from the audits (quarantined nodes; answers re-scored), ``metrics``
    is the process's Prometheus registry (``/metrics`` is served when given), and
    ``health_checks`` is the list ``/health`` consults (the caller may append to it).
    """
    scheduler = build_scheduler(
        options, registry=registry, reputation=reputation, trust_for=trust_for, blocked=blocked
    )
    gateway_metrics = GatewayMetrics(metrics) if metrics is not None else None
    completions = CompletionService(
        router=Router(
            scheduler,
            first_token_timeout_s=options.first_token_timeout_s,
            stall_timeout_s=options.stall_timeout_s,
        ),
        scheduler=scheduler,
        max_request_bytes=options.max_request_bytes,
        timeout_s=options.timeout_s,
        record=record,
        metrics=gateway_metrics,
        pipeline=pipeline,
        limits=options.limits,
        audits=audits,
        # accounting: quotas, the ledger and usage settle each answer (lichen.gateway.guard)
        settle=accounting.guard.settle if accounting is not None else None,
        weigh=accounting.guard.weigh if accounting is not None else None,
    )
    checks = health_checks if health_checks is not None else []
    app = create_app(
        GatewayDeps(
            registry=registry,
            completions=completions,
            started=started if started is not None else time.time(),
            metrics=gateway_metrics,
            accounting=accounting,
            body_limits=options.body_limits,
            hosts=options.hosts,
            operator=operator,
            health_checks=checks,
        )
    )
    return Gateway(app, completions, scheduler, gateway_metrics, checks)


def build_scheduler(
    options: GatewayOptions,
    *,
    registry: Registry,
    reputation: Reputation | None = None,
    trust_for: Callable[[str], Collection[str]] | None = None,
    blocked: Callable[[str], bool] | None = None,
) -> Scheduler:
    """The scheduler :func:`build_gateway` routes with, over ``registry``."""
    return Scheduler(
        registry,
        reputation,
        trust_for=trust_for,
        blocked=blocked,
        alias_of=catalog_name if options.catalog_aliases else None,
        affinity=options.affinity,
        queue_per_slot=options.queue_per_slot,
        queue_wait_s=options.queue_wait_s,
    )


def catalog_name(name: str) -> str | None:
    """The catalog's name for ``name`` if it is one of its aliases (case-insensitive)."""
    entry = catalog_lookup(name)
    return entry.name if entry is not None else None
