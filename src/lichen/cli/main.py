"""The ``lichen`` command: a Typer root with one module per command group."""

from __future__ import annotations

import typer

from lichen import __version__
from lichen.cli import models
from lichen.cli.up import up_command

app = typer.Typer(
    name="lichen",
    help="Lichen: a peer-to-peer network for LLM inference with privacy as code.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("up")(up_command)
app.add_typer(models.app, name="models")


@app.command("version")
def version_command() -> None:
    """Print the Lichen version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
