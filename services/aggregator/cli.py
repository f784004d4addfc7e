"""``fedmedclip aggregator``: serve the hub, or migrate its database."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="The federation hub (rounds, models).")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8100,
) -> None:
    """Run the aggregator with uvicorn (settings from FEDMEDCLIP_AGG_* variables)."""
    import torch
    import uvicorn

    from services.common.serving import uvicorn_limits

    # The hub's tensors are small (one D x D FAM per update) and requests already run in
    # parallel threads; intra-op threads only add synchronisation, which on a busy host
    # made decoding and averaging an update up to 20x slower (see bench/aggregate.py).
    torch.set_num_threads(1)

    uvicorn.run(
        "services.aggregator.app:create_app",
        factory=True,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        **uvicorn_limits(),
    )


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest revision (needed once per PostgreSQL upgrade)."""
    from services.aggregator.db.engine import Database
    from services.aggregator.db.migrate import current_revision, upgrade
    from services.aggregator.settings import AggregatorSettings

    db = Database.connect(AggregatorSettings().resolved_database_url())
    try:
        before = current_revision(db.engine)
        after = upgrade(db.engine)
    finally:
        db.dispose()
    typer.echo(f"aggregator database: {before or 'empty'} -> {after}")
