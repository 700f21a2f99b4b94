"""``lichen node``: serve models to a network you were invited to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lichen.cli.engine_options import (
    BatchThreadsOption,
    CtxSizeOption,
    EmbeddingsOption,
    LocalModelOption,
    LogLevelOption,
    ParallelOption,
    ThreadsOption,
    UpstreamKeyOption,
    UpstreamOption,
    engine_overrides,
    settings_or_exit,
)
from lichen.cli.models import RichProgress
from lichen.errors import LichenError
from lichen.roles.event_loop import run
from lichen.roles.node import NodeReady, run_node


def node_command(
    join: Annotated[
        str | None,
        typer.Option("--join", help="Invite token from the network's operator (first start only)."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Model to serve: catalog name, GGUF path or URL (repeat)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Node name shown to the network.")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data directory: this node's identity (default ~/.local/share/lichen)."),
    ] = None,
    threads: ThreadsOption = None,
    batch_threads: BatchThreadsOption = None,
    parallel: ParallelOption = None,
    ctx_size: CtxSizeOption = None,
    log_level: LogLevelOption = None,
    upstream: UpstreamOption = None,
    upstream_key_secret: UpstreamKeyOption = None,
    local_model: LocalModelOption = None,
    embeddings: EmbeddingsOption = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on this loopback port.")
    ] = None,
    refuse_policy: Annotated[
        list[str] | None,
        typer.Option(
            "--refuse-policy",
            help="Never join a network with this policy (repeat; e.g. open, dataset, unsigned).",
        ),
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-ca", help="Also trust this PEM CA for the tracker's wss:// certificate."
        ),
    ] = None,
    telemetry: Annotated[
        bool | None,
        typer.Option(
            "--telemetry/--no-telemetry",
            help="Send usage counters to the tracker (default: the saved setting, off).",
        ),
    ] = None,
) -> None:
    """Join a network and serve models; SIGTERM finishes running jobs, then exits."""
    console = Console(stderr=True)
    settings = settings_or_exit(
        console,
        data_dir=data_dir,
        node_name=name,
        threads=threads,
        batch_threads=batch_threads,
        parallel=parallel,
        ctx_size=ctx_size,
        log_level=log_level,
        metrics_port=metrics_port,
        **engine_overrides(upstream, upstream_key_secret, local_model, embeddings),
        refuse_policies=",".join(refuse_policy) if refuse_policy else None,
        telemetry=telemetry,
        tls_ca_file=tls_ca,
    )

    def ready(info: NodeReady) -> None:
        others = len(info.other_tracker_urls)
        more = f" (or {others} other tracker{'s' * (others != 1)})" if others else ""
        console.print(
            f"[bold green]Lichen node[/bold green] {info.name} ({info.peer_id}) loaded "
            f"{', '.join(info.models) or 'no models'}\n  joining {info.tracker_url}{more} "
            "(it serves once the tracker admits it; a private network's operator approves it first)"
            "\n  Ctrl-C to stop.",
            highlight=False,
        )

    try:
        run(
            run_node(
                settings,
                join=join,
                models=list(model or []),
                progress=RichProgress(console),
                on_ready=ready,
            )
        )
    except LichenError as error:
        console.print(f"[red]error:[/red] {error.code.value}: {error.message}", highlight=False)
        raise typer.Exit(1) from None
