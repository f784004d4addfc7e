"""``fedmedclip inference ...``: run the site's prediction API.

torch, open_clip and the app are imported inside the command so that ``fedmedclip --help``
stays fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.callback()
def inference() -> None:
    """The site's prediction API (POST /predict on the FAM + private-head ensemble)."""


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 in containers)."),
    port: int = typer.Option(8300, help="TCP port."),
) -> None:
    """Serve POST /predict from the site's model store (settings: FEDMEDCLIP_INFERENCE_*)."""
    import uvicorn
    from pydantic import ValidationError

    from services.common.serving import uvicorn_limits
    from services.inference_api.app import create_app
    from services.inference_api.settings import InferenceSettings

    try:
        settings = InferenceSettings()
    except ValidationError as exc:
        typer.echo(f"invalid FEDMEDCLIP_INFERENCE_* settings:\n{exc}", err=True)
        raise typer.Exit(2) from exc
    # Our own middleware logs every request with its id, so uvicorn's access log and
    # logging config stay off (they would log each request twice, in another format).
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        **uvicorn_limits(),
    )
