"""Options shared by ``lichen up``, ``lichen node``, ``lichen tracker`` and ``lichen gateway``,
and how a serving command reports a failure to start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from lichen.config import Settings, load_settings
from lichen.errors import LichenError
from lichen.logs import setup_logging

UpstreamOption = Annotated[
    str | None,
    typer.Option(
        "--upstream",
        help="Also serve the models of this OpenAI-compatible upstream (base URL).",
    ),
]
UpstreamKeyOption = Annotated[
    str | None,
    typer.Option(
        "--upstream-key-secret",
        help="Name of the secret (`lichen secret set NAME`) holding the upstream's API key.",
    ),
]
LocalModelOption = Annotated[
    bool | None,
    typer.Option(
        "--local-model/--no-local-model",
        help="Serve a local GGUF model (default); --no-local-model serves only the upstream.",
    ),
]
EmbeddingsOption = Annotated[
    bool | None,
    typer.Option("--embeddings/--no-embeddings", help="Load local models for embeddings too."),
]


def engine_overrides(
    upstream: str | None,
    upstream_key_secret: str | None,
    local_model: bool | None,
    embeddings: bool | None,
) -> dict[str, Any]:
    """Settings overrides for these options (None: not given on the command line)."""
    return {
        "upstream_url": upstream,
        "upstream_key_secret": upstream_key_secret,
        "local_model": local_model,
        "embeddings": embeddings,
    }


TlsCertOption = Annotated[
    Path | None,
    typer.Option(
        "--tls-certfile", help="Serve HTTPS/WSS with this PEM certificate (nodes dial wss://)."
    ),
]
TlsKeyOption = Annotated[
    Path | None, typer.Option("--tls-keyfile", help="PEM private key for --tls-certfile.")
]
ForwardedAllowOption = Annotated[
    str | None,
    typer.Option(
        "--forwarded-allow-ips",
        help="Proxies (IPs/CIDRs, comma-separated) whose X-Forwarded-For is believed; "
        "default: none, the headers are ignored.",
    ),
]
OperatorSurfacesOption = Annotated[
    str | None,
    typer.Option(
        "--operator-surfaces",
        help="open, operator or auto: who may read /docs, /metrics, /v1/network "
        "(auto: operator token on public networks).",
    ),
]


def serving_overrides(
    tls_certfile: Path | None,
    tls_keyfile: Path | None,
    forwarded_allow_ips: str | None,
    operator_surfaces: str | None,
) -> dict[str, Any]:
    """Settings overrides for how the HTTP server faces the network."""
    return {
        "tls_certfile": tls_certfile,
        "tls_keyfile": tls_keyfile,
        "forwarded_allow_ips": forwarded_allow_ips,
        "operator_surfaces": operator_surfaces,
    }


ThreadsOption = Annotated[int | None, typer.Option(help="Generation threads (0 = all).")]
BatchThreadsOption = Annotated[
    int | None, typer.Option(help="Prompt-processing threads (0 = same as --threads).")
]
ParallelOption = Annotated[int | None, typer.Option(help="Parallel slots per model.")]
CtxSizeOption = Annotated[int | None, typer.Option(help="Total context tokens per model.")]
LogLevelOption = Annotated[str | None, typer.Option(help="DEBUG, INFO or WARNING.")]
HostOption = Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")]
PortOption = Annotated[int | None, typer.Option(help="HTTP port (default 8470).")]


def settings_or_exit(console: Console, **overrides: Any) -> Settings:
    """Settings with these CLI overrides, logging configured; exit 2 on an invalid value."""
    try:
        settings = load_settings(**overrides)
    except ValueError as exc:
        console.print(f"[red]error:[/red] invalid setting: {exc}")
        raise typer.Exit(2) from None
    setup_logging(settings.log_level)
    return settings


def serve_or_exit(console: Console, settings: Settings, serve: Callable[[], object]) -> None:
    """Run a serving command's ``serve()``; a typed error or a port that cannot be bound
    is one red line and exit status 1, not a traceback."""
    try:
        serve()
    except LichenError as error:
        console.print(f"[red]error:[/red] {error.message}")
        raise typer.Exit(1) from None
    except OSError as exc:
        console.print(
            f"[red]error:[/red] cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
            f" (choose another port with --port)",
            highlight=False,
        )
        raise typer.Exit(1) from None
