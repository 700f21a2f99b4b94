"""``lichen up``: a whole network on this machine in one command."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lichen.cli.engine_options import (
    BatchThreadsOption,
    CtxSizeOption,
    EmbeddingsOption,
    ForwardedAllowOption,
    HostOption,
    LocalModelOption,
    LogLevelOption,
    OperatorSurfacesOption,
    ParallelOption,
    PortOption,
    ThreadsOption,
    TlsCertOption,
    TlsKeyOption,
    UpstreamKeyOption,
    UpstreamOption,
    engine_overrides,
    serve_or_exit,
    serving_overrides,
    settings_or_exit,
)
from lichen.cli.models import RichProgress
from lichen.up import Ready, run_up


def up_command(
    host: HostOption = None,
    port: PortOption = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default ~/.local/share/lichen).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model: catalog name, GGUF path or URL.")
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
    tls_certfile: TlsCertOption = None,
    tls_keyfile: TlsKeyOption = None,
    forwarded_allow_ips: ForwardedAllowOption = None,
    operator_surfaces: OperatorSurfacesOption = None,
) -> None:
    """Run tracker + gateway + one node serving the default model, in one process."""
    console = Console(stderr=True)
    settings = settings_or_exit(
        console,
        host=host,
        port=port,
        data_dir=data_dir,
        model=model,
        threads=threads,
        batch_threads=batch_threads,
        parallel=parallel,
        ctx_size=ctx_size,
        log_level=log_level,
        **engine_overrides(upstream, upstream_key_secret, local_model, embeddings),
        **serving_overrides(tls_certfile, tls_keyfile, forwarded_allow_ips, operator_surfaces),
    )

    def ready(info: Ready) -> None:
        console.print(
            f"[bold green]Lichen is up[/bold green] at {info.url}  "
            f"(model [bold]{info.model}[/bold], node {info.peer_id})\n"
            f"  OpenAI API: {info.url}/v1   web UI: {info.url}/\n"
            "  Ctrl-C to stop.",
            highlight=False,
        )

    serve_or_exit(
        console,
        settings,
        lambda: asyncio.run(run_up(settings, progress=RichProgress(console), on_ready=ready)),
    )
