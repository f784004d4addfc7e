"""What the three ``serve`` commands share: TLS options and a start that explains failures.

A bad setting, a missing certificate or a key that does not match stops the start with one
line naming the problem and exit status 2, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from services.common.serving import TlsConfigError, serve
from services.common.settings import ServiceSettings, SettingsRefused

S = TypeVar("S", bound=ServiceSettings)


SslCertfile = Annotated[
    Path | None,
    typer.Option(
        "--ssl-certfile", help="PEM certificate to serve HTTPS (overrides <PREFIX>SSL_CERTFILE)."
    ),
]
SslKeyfile = Annotated[
    Path | None,
    typer.Option(
        "--ssl-keyfile", help="PEM key of the certificate (overrides <PREFIX>SSL_KEYFILE)."
    ),
]


def serve_service(
    read_settings: Callable[[], S],
    build_app: Callable[[S], Any],
    *,
    host: str,
    port: int,
    ssl_certfile: Path | None = None,
    ssl_keyfile: Path | None = None,
) -> None:
    """Read the settings, check TLS files, build the app and serve it (HTTPS when set)."""
    try:
        settings = read_settings()
        overrides = {"ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if overrides:
            settings = settings.model_copy(update=overrides)
        tls = settings.server_tls()
        app = build_app(settings)
    except (ValidationError, SettingsError, TlsConfigError, SettingsRefused) as exc:
        typer.echo(f"cannot start: {exc}", err=True)
        raise typer.Exit(2) from exc
    serve(app, host=host, port=port, tls=tls)
