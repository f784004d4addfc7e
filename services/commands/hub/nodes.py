"""``fedmedclip hub nodes``: hospital nodes and their tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from services.commands.hub.connection import admin_client
from services.commands.hub.output import AsJson, fields_table, show, when

if TYPE_CHECKING:
    from fedmedclip.schemas import NodeCreated, NodeInfo

app = typer.Typer(no_args_is_help=True, help="Hospital nodes and their tokens.")

NodeId = Annotated[int, typer.Argument(min=1, help="The node's id (see `nodes list`).")]


def _node_state(node: NodeInfo) -> str:
    return "active" if node.revoked_at is None else f"revoked {when(node.revoked_at)}"


@app.command("list")
def nodes_list(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List registered nodes, with when each was last seen."""
    with admin_client(ctx) as hub:
        nodes = hub.list_nodes()
    table = Table("id", "name", title="nodes")
    for heading in ("registered", "last seen", "state"):
        table.add_column(heading, no_wrap=True)
    for node in nodes:
        table.add_row(
            str(node.id),
            node.name,
            when(node.created_at),
            when(node.last_seen),
            _node_state(node),
        )
    show(nodes, as_json, table)


def _show_token(created: NodeCreated, as_json: bool) -> None:
    table = fields_table([("id", created.id), ("name", created.name), ("token", created.token)])
    show(created, as_json, table)
    if not as_json:
        typer.echo("Store this token at the site now: the hub shows it only once.", err=True)


@app.command("add")
def nodes_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The site's name: letters, digits, '.', '_', '-'.")],
    as_json: AsJson = False,
) -> None:
    """Register a node; prints its token, which the hub shows only this once."""
    with admin_client(ctx) as hub:
        created = hub.add_node(name)
    _show_token(created, as_json)


@app.command("revoke")
def nodes_revoke(ctx: typer.Context, node_id: NodeId, as_json: AsJson = False) -> None:
    """Revoke a node's token now: its calls are refused from this moment."""
    with admin_client(ctx) as hub:
        node = hub.revoke_node(node_id)
    table = fields_table(
        [("id", node.id), ("name", node.name), ("state", _node_state(node))], title="node"
    )
    show(node, as_json, table)


@app.command("rotate-token")
def nodes_rotate_token(
    ctx: typer.Context,
    node_id: NodeId,
    grace_seconds: Annotated[
        int,
        typer.Option(min=0, help="How long the old token keeps working (0: refused at once)."),
    ] = 3600,
    as_json: AsJson = False,
) -> None:
    """Give a node a new token; prints it (shown only this once)."""
    with admin_client(ctx) as hub:
        created = hub.rotate_token(node_id, grace_seconds)
    _show_token(created, as_json)
