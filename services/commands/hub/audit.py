"""``fedmedclip hub audit``: the hub's audit trail."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from services.commands.hub.connection import admin_client
from services.commands.hub.output import AsJson, optional, show, when

AUDIT_DETAILS_CHARS = 80
"""Characters of an event's details a table row shows (``--json`` shows them whole)."""


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO time such as 2026-05-01T08:00:00Z", param_hint="--since"
        ) from None


def audit(
    ctx: typer.Context,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. round.open.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor, e.g. node:site-a.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only events from this ISO time on (UTC when no zone).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    as_json: AsJson = False,
) -> None:
    """Show the hub's audit trail, newest first."""
    start = _since(since)
    with admin_client(ctx) as hub:
        events = hub.audit(action=action, actor=actor, since=start, limit=limit)
    table = Table("id", title="audit")
    table.add_column("at", no_wrap=True)
    table.add_column("actor")
    table.add_column("action")
    table.add_column("target")
    table.add_column("details", overflow="fold")
    for event in events:
        details = json.dumps(event.details, separators=(",", ":"), ensure_ascii=False)
        if len(details) > AUDIT_DETAILS_CHARS:
            details = details[: AUDIT_DETAILS_CHARS - 1] + "…"
        table.add_row(
            str(event.id),
            when(event.at),
            event.actor,
            event.action,
            optional(event.target),
            details,
        )
    show(events, as_json, table)
