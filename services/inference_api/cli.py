"""``fedmedclip inference ...``: run the site's prediction API.

torch, open_clip and the app are imported inside the command so that ``fedmedclip --help``
stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from services.common.cli import SslCertfile, SslKeyfile, serve_service

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.callback()
def inference() -> None:
    """The site's prediction API (POST /predict on the FAM + private-head ensemble)."""


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to listen on (0.0.0.0 in containers).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8300,
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


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="Folder for the HTML and PNG.")] = Path(
        "monitoring-report"
    ),
    url: Annotated[
        str, typer.Option(help="The inference API to read GET /monitoring from.")
    ] = "http://127.0.0.1:8300",
    token_env: Annotated[
        str,
        typer.Option(
            help="Environment variable holding a clinician or admin token (never on the "
            "command line)."
        ),
    ] = "FEDMEDCLIP_INFERENCE_REPORT_TOKEN",
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="Read a saved GET /monitoring JSON instead of the API."),
    ] = None,
) -> None:
    """Write the site monitoring (drift, histograms, feedback metrics) as HTML + PNG."""
    import httpx

    from services.inference_api.report import write_report

    if from_file is not None:
        monitoring = json.loads(from_file.read_text(encoding="utf-8"))
    else:
        token = os.environ.get(token_env, "")
        if not token:
            raise typer.BadParameter(f"set {token_env} to a clinician or admin token")
        try:
            response = httpx.get(
                f"{url.rstrip('/')}/monitoring",
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
        except httpx.HTTPError as exc:
            raise typer.BadParameter(f"cannot reach {url}: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise typer.BadParameter(f"GET /monitoring answered {response.status_code}")
        monitoring = response.json()
    page, png = write_report(monitoring, out)
    typer.echo(f"wrote {page} and {png}")
