"""``fedmedclip aggregator``: serve the hub, migrate, back up or restore its database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.common.cli import (
    BackupDir,
    BackupKeep,
    RestoreForce,
    SslCertfile,
    SslKeyfile,
    backup_service,
    restore_service,
    serve_service,
)

app = typer.Typer(no_args_is_help=True, help="The federation hub (rounds, models).")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8100,
    ssl_certfile: SslCertfile = None,
    ssl_keyfile: SslKeyfile = None,
) -> None:
    """Run the aggregator (settings from FEDMEDCLIP_AGG_* variables; HTTPS when given a
    certificate, mutual TLS for nodes with FEDMEDCLIP_AGG_CLIENT_CA)."""
    import torch

    from services.aggregator.app import create_app
    from services.aggregator.settings import AggregatorSettings

    # The hub's tensors are small (one D x D FAM per update) and requests already run in
    # parallel threads; intra-op threads only add synchronisation, which on a busy host
    # made decoding and averaging an update up to 20x slower (see bench/aggregate.py).
    torch.set_num_threads(1)

    serve_service(
        AggregatorSettings,
        create_app,
        host=host,
        port=port,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest revision (needed once per PostgreSQL upgrade)."""
    from services.aggregator.db.migrate import current_revision, upgrade
    from services.aggregator.settings import AggregatorSettings
    from services.common.db import Database

    db = Database.connect(AggregatorSettings().resolved_database_url())
    try:
        before = current_revision(db.engine)
        after = upgrade(db.engine)
    finally:
        db.dispose()
    typer.echo(f"aggregator database: {before or 'empty'} -> {after}")


@app.command()
def backup(output_dir: BackupDir = Path("."), keep: BackupKeep = 0) -> None:
    """Write a backup archive of the hub (database: models, rounds, updates, audit trail)."""
    from services.aggregator.backup import BACKUP
    from services.aggregator.settings import AggregatorSettings

    backup_service(BACKUP, AggregatorSettings().resolved_database_url(), output_dir, keep)


@app.command()
def restore(
    archive: Annotated[Path, typer.Argument(help="A backup archive of the hub.")],
    force: RestoreForce = False,
) -> None:
    """Restore a backup archive into the configured database (stop the hub first)."""
    from services.aggregator.backup import BACKUP
    from services.aggregator.settings import AggregatorSettings

    restore_service(BACKUP, AggregatorSettings().resolved_database_url(), archive, force)
