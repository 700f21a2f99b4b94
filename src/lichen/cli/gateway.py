"""``lichen gateway``: run one of a cluster's gateways (the API, no node links)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lichen.cli.engine_options import (
    ForwardedAllowOption,
    HostOption,
    LogLevelOption,
    OperatorSurfacesOption,
    PortOption,
    TlsCertOption,
    TlsKeyOption,
    serve_or_exit,
    serving_overrides,
    settings_or_exit,
)
from lichen.identity.store import load_identity
from lichen.portcheck import ensure_port_free
from lichen.roles.cluster import gateway_stack
from lichen.roles.event_loop import run
from lichen.server import install_shutdown_signals


def gateway_command(
    host: HostOption = None,
    port: PortOption = None,
    nats_url: Annotated[
        str | None,
        typer.Option(help="The cluster's message bus (or LICHEN_NATS_URL), e.g. nats://h:4222."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="The network's shared database (or LICHEN_DATABASE_URL)."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data directory holding the network's keys and policy."),
    ] = None,
    log_level: LogLevelOption = None,
    tls_certfile: TlsCertOption = None,
    tls_keyfile: TlsKeyOption = None,
    forwarded_allow_ips: ForwardedAllowOption = None,
    operator_surfaces: OperatorSurfacesOption = None,
) -> None:
    """Run a gateway of a cluster: the API and web UI over the trackers' nodes.

    It holds no node links: it schedules from the nodes every tracker publishes on the
    message bus and shares accounts, quotas and the ledger through the database (and
    rate limits through LICHEN_REDIS_URL). Run as many as you like behind a load
    balancer; see docs/deployment.md.
    """
    console = Console(stderr=True)
    settings = settings_or_exit(
        console,
        host=host,
        port=port,
        nats_url=nats_url,
        database_url=database_url,
        data_dir=data_dir,
        log_level=log_level,
        **serving_overrides(tls_certfile, tls_keyfile, forwarded_allow_ips, operator_surfaces),
    )

    async def serve() -> None:
        stop = install_shutdown_signals(settings.shutdown_grace_s)
        ensure_port_free(settings.host, settings.port)
        identity = load_identity(settings.data_dir)
        async with gateway_stack(settings, identity) as stack:
            console.print(
                f"[bold green]Lichen gateway[/bold green] at {stack.url}\n"
                f"  OpenAI API: {stack.url}/v1\n"
                "  Ctrl-C to stop.",
                highlight=False,
            )
            await stop.wait()

    serve_or_exit(console, settings, lambda: run(serve()))
