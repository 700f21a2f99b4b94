"""``lichen tracker``: run a network's tracker (and, by default, its gateway)."""

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
from lichen.roles.event_loop import run
from lichen.roles.tracker import TrackerStack, tracker_stack
from lichen.server import install_shutdown_signals


def tracker_command(
    host: HostOption = None,
    port: PortOption = None,
    public: Annotated[
        bool | None,
        typer.Option(
            "--public/--private",
            help="public: admit new nodes without approval (per-IP limit); "
            "private (default): invited nodes wait for `lichen network approve`.",
        ),
    ] = None,
    no_gateway: Annotated[
        bool, typer.Option("--no-gateway", help="Run a bare tracker without the OpenAI API.")
    ] = False,
    public_url: Annotated[
        str | None, typer.Option(help="URL nodes dial to reach this tracker (put in invites).")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default ~/.local/share/lichen).")
    ] = None,
    log_level: LogLevelOption = None,
    tls_certfile: TlsCertOption = None,
    tls_keyfile: TlsKeyOption = None,
    forwarded_allow_ips: ForwardedAllowOption = None,
    operator_surfaces: OperatorSurfacesOption = None,
) -> None:
    """Run a tracker: membership, the live node registry, scheduling, and the gateway."""
    console = Console(stderr=True)
    settings = settings_or_exit(
        console,
        host=host,
        port=port,
        network_mode=None if public is None else ("public" if public else "private"),
        public_url=public_url,
        data_dir=data_dir,
        log_level=log_level,
        **serving_overrides(tls_certfile, tls_keyfile, forwarded_allow_ips, operator_surfaces),
    )

    async def serve() -> None:
        stop = install_shutdown_signals(settings.shutdown_grace_s)
        ensure_port_free(settings.host, settings.port)  # names --port (or a running Lichen)
        identity = load_identity(settings.data_dir)
        async with tracker_stack(settings, identity, gateway=not no_gateway) as stack:
            _ready(console, stack, gateway=not no_gateway)
            await stop.wait()

    serve_or_exit(console, settings, lambda: run(serve()))


def _ready(console: Console, stack: TrackerStack, *, gateway: bool) -> None:
    mode = stack.settings.network_mode
    api = f"  OpenAI API: {stack.url}/v1\n" if gateway else ""
    console.print(
        f"[bold green]Lichen tracker[/bold green] at {stack.url} ({mode} network)\n"
        f"{api}"
        f"  nodes dial: {stack.info.node_url}\n"
        f"  invite a node: lichen invite create --data-dir {stack.settings.data_dir}\n"
        "  Ctrl-C to stop.",
        highlight=False,
    )
