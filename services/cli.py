"""The ``fedmedclip`` command: one Typer app composed of each component's commands.

The services bring their own (``aggregator``, ``node``, ``inference``); the commands on top
of them live in :mod:`services.commands`, one module or package per group. Heavy imports
(torch, open_clip) happen inside the commands so that ``--help`` is quick.
"""

from __future__ import annotations

from typing import Annotated

import typer

import fedmedclip
from services.aggregator.cli import app as aggregator_app
from services.commands.data import app as data_app
from services.commands.demo.command import demo
from services.commands.hub import app as hub_app
from services.commands.pki import app as pki_app
from services.commands.simulate import simulate
from services.hospital_node.cli import app as node_app
from services.inference_api.cli import app as inference_app

app = typer.Typer(
    name="fedmedclip",
    help="Federated CLIP for medical image classification: hub, hospital node, inference API.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(aggregator_app, name="aggregator", help="The federation hub (rounds, models).")
app.add_typer(hub_app, name="hub", help="Administer a running hub over HTTP.")
app.add_typer(node_app, name="node", help="A hospital site's node API and training worker.")
app.add_typer(inference_app, name="inference", help="The site's prediction API.")
app.add_typer(pki_app, name="pki", help="Federation CA and certificates (mutual TLS).")
app.add_typer(data_app, name="data", help="Synthetic data and dataset tools.")
app.command(help="Run a small federation end to end on this machine.")(demo)
app.command(help="Compare FedMedCLIP with baselines on local data (research simulator).")(simulate)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fedmedclip {fedmedclip.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Federated CLIP for medical image classification: hub, hospital node, inference API."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
