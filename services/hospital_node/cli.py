"""``fedmedclip node serve|worker``: the site's node API and its Celery training worker.

Heavy modules (torch, open_clip, Celery) are imported inside the commands so that
``fedmedclip --help`` stays quick.
"""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8200, help="Port of the node API."),
) -> None:
    """Run the node API (datasets, jobs, model) and, with auto-join, the round agent."""
    import uvicorn

    from services.common.serving import uvicorn_limits
    from services.common.structured_logging import configure_logging
    from services.hospital_node.app import create_app
    from services.hospital_node.settings import NodeSettings

    settings = NodeSettings()
    configure_logging(settings.log_json)
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, **uvicorn_limits())


@app.command()
def worker(
    loglevel: str = typer.Option("INFO", help="Celery log level."),
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
