"""``fedmedclip hub``: run a federation from a terminal or a script, over the hub's HTTP API.

Every command is one or a few calls of :class:`~services.common.hub_client.HubAdminClient`
(so the admin CLI, the demo and the sites speak the hub's API through one client), shown as a
table, or printed as JSON with ``--json`` for scripts. The hub's refusals arrive as RFC 9457
problems and are shown as one line, ``error: <detail> (<code>, HTTP <status>)``.

One module per sub-group (``task``, ``nodes``, ``rounds``, ``models``, ``audit``); how the
hub is reached is in ``connection``, how answers are printed in ``output``.

Exit codes, so that scripts can tell the cases apart:

* 0: done;
* 1: the hub refused (its problem is shown), or its answer failed a check (a model blob
  whose sha256 is not the one published);
* 2: the command could not be sent: bad usage or input, no URL or token, an unusable CA
  bundle, the hub unreachable after the retries;
* 3: ``rounds watch``/``rounds close``: the round ended without publishing a model
  (failed or cancelled).

The hub client pulls in the core library (torch); it is imported when a command runs, so
``fedmedclip --help`` stays quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.commands.hub import models, nodes, rounds, task
from services.commands.hub.audit import audit
from services.commands.hub.connection import Connection

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(task.app, name="task")
app.add_typer(nodes.app, name="nodes")
app.add_typer(rounds.app, name="rounds")
app.add_typer(models.app, name="models")
app.command("audit")(audit)


@app.callback()
def connect(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="FEDMEDCLIP_HUB_URL", help="The hub's base URL, e.g. https://hub:8000."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="FEDMEDCLIP_HUB_TOKEN",
            help="The hub's admin token. Prefer the variable: a command line is visible to "
            "other users of the machine.",
            show_default=False,
        ),
    ] = None,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(
            envvar="FEDMEDCLIP_HUB_CA_BUNDLE",
            help="CA bundle the hub's certificate must chain to (default: the system's CAs).",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for each answer.")
    ] = 30.0,
    retries: Annotated[
        int, typer.Option(min=0, max=10, help="Retries of a call that met a transient fault.")
    ] = 2,
) -> None:
    """Talk to a hub as its admin: task, nodes, rounds, models, audit trail."""
    ctx.obj = Connection(url, token, ca_bundle, timeout, retries)
