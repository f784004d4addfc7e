"""``fedmedclip inference ...``: run the site's prediction API.

torch, open_clip and the app are imported inside the command so that ``fedmedclip --help``
stays fast.
"""

from __future__ import annotations

import typer

from services.common.cli import SslCertfile, SslKeyfile, serve_service

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.callback()
def inference() -> None:
    """The site's prediction API (POST /predict on the FAM + private-head ensemble)."""


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 in containers)."),
    port: int = typer.Option(8300, help="TCP port."),
    ssl_certfile: SslCertfile = None,
    ssl_keyfile: SslKeyfile = None,
) -> None:
    """Serve POST /predict from the site's model store (settings: FEDMEDCLIP_INFERENCE_*)."""
    from services.inference_api.app import create_app
    from services.inference_api.settings import InferenceSettings

    serve_service(
        InferenceSettings,
        create_app,
        host=host,
        port=port,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
