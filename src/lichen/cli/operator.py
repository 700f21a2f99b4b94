"""``lichen operator``: the operator's credential for the network's operator surfaces."""

from __future__ import annotations

import typer

from lichen.cli._operator import TrackerDataDir, fail, operator_settings
from lichen.errors import LichenError
from lichen.http.operator import TOKEN_FILE, operator_token, surfaces_mode

app = typer.Typer(help="The operator token for /metrics, /v1/network and /docs.")


@app.command("token")
def token_command(data_dir: TrackerDataDir = None) -> None:
    """Print the operator token (created, mode 0600, on first use).

    Send it as ``Authorization: Bearer TOKEN`` to /metrics, /v1/network,
    /ui/api/node, /docs and /openapi.json when operator surfaces are gated
    (public networks by default; LICHEN_OPERATOR_SURFACES).
    """
    settings = operator_settings(data_dir)
    try:
        token = operator_token(settings.data_dir)
    except (LichenError, OSError) as exc:
        raise fail(exc.message if isinstance(exc, LichenError) else str(exc)) from None
    mode = surfaces_mode(settings)
    typer.echo(
        f"# {settings.data_dir / TOKEN_FILE}; operator surfaces here are {mode}"
        " (LICHEN_OPERATOR_SURFACES)",
        err=True,
    )
    typer.echo(token)
