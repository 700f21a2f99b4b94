"""Engine options shared by ``lichen up`` and ``lichen node`` (upstreams, embeddings)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

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
