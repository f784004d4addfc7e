"""What ``fedmedclip hub`` prints: a table for people, or JSON with ``--json`` for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.table import Table

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts), not a table.")]


def console() -> Console:
    # Made per call: it writes to the sys.stdout of the moment (a test runner swaps it).
    return Console(highlight=False)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(to_jsonable_python(value), indent=2, ensure_ascii=False))


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    if moment.tzinfo is None:  # the hub's SQLite store drops the zone; its times are UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def optional(value: object) -> str:
    return "-" if value is None else str(value)


def fields_table(rows: Sequence[tuple[str, object]], title: str | None = None) -> Table:
    """A two-column table: one field of one object per row."""
    table = Table(show_header=False, title=title, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, optional(value))
    return table


def show(value: Any, as_json: bool, table: Table) -> None:
    if as_json:
        print_json(value)
    else:
        console().print(table)
