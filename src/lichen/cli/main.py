"""The ``lichen`` command: a Typer root with one module per command group."""

from __future__ import annotations

import typer

from lichen import __version__
from lichen.cli import credits as credits_cli
from lichen.cli import invite, models, network, policy, privacy, secret
from lichen.cli import operator as operator_cli
from lichen.cli.chat import chat_command
from lichen.cli.gateway import gateway_command
from lichen.cli.help_format import install as install_help_format
from lichen.cli.node import node_command
from lichen.cli.tracker import tracker_command
from lichen.cli.up import up_command

install_help_format()  # no "<bool>" after flags in --help

app = typer.Typer(
    name="lichen",
    help="Lichen: a peer-to-peer network for LLM inference with privacy as code.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("up")(up_command)
app.add_typer(models.app, name="models")
app.command("tracker")(tracker_command)
app.command("gateway")(gateway_command)
app.command("node")(node_command)
app.add_typer(invite.app, name="invite")
app.add_typer(network.app, name="network")
app.add_typer(secret.app, name="secret")
app.add_typer(policy.app, name="policy")
app.add_typer(privacy.app, name="privacy")
app.command("chat")(chat_command)
app.add_typer(credits_cli.app, name="credits")
app.add_typer(credits_cli.ledger_app, name="ledger")
app.add_typer(operator_cli.app, name="operator")


@app.command("version")
def version_command() -> None:
    """Print the Lichen version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
