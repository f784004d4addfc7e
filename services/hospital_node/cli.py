"""``fedmedclip node serve|worker|backup|restore``: the site's node API, its Celery training
worker, and backups of the node's state.

Heavy modules (torch, open_clip, Celery) are imported inside the commands so that
``fedmedclip --help`` stays quick.
"""

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

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the node API.")] = 8200,
    ssl_certfile: SslCertfile = None,
    ssl_keyfile: SslKeyfile = None,
) -> None:
    """Run the node API (datasets, jobs, model) and, with auto-join, the round agent."""
    from services.hospital_node.app import create_app
    from services.hospital_node.settings import NodeSettings

    serve_service(
        NodeSettings,
        create_app,
        host=host,
        port=port,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )


@app.command()
def worker(
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run one Celery worker (concurrency 1) for training jobs; needs FEDMEDCLIP_NODE_BROKER_URL."""
    from services.hospital_node.settings import NodeSettings
    from services.hospital_node.worker import run_worker

    settings = NodeSettings()
    if not settings.broker_url:
        raise typer.BadParameter(
            "FEDMEDCLIP_NODE_BROKER_URL is empty: without a broker, jobs run inside "
            "`fedmedclip node serve` and no worker is needed"
        )
    run_worker(settings, loglevel=loglevel)


@app.command()
def backup(output_dir: BackupDir = Path("."), keep: BackupKeep = 0) -> None:
    """Write a backup archive of the node (database with the privacy ledger, model store)."""
    from services.hospital_node.backup import backup_spec
    from services.hospital_node.settings import NodeSettings

    settings = NodeSettings()
    backup_service(backup_spec(settings), settings.resolved_database_url(), output_dir, keep)


@app.command()
def restore(
    archive: Annotated[Path, typer.Argument(help="A backup archive of the node.")],
    force: RestoreForce = False,
) -> None:
    """Restore a backup archive into the configured database and model store (stop the
    node API and its workers first)."""
    from services.hospital_node.backup import backup_spec
    from services.hospital_node.settings import NodeSettings

    settings = NodeSettings()
    restore_service(backup_spec(settings), settings.resolved_database_url(), archive, force)
