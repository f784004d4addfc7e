"""What the services' commands share: TLS options and a start that explains failures for
``serve``; the options and reporting of ``backup`` and ``restore``.

A bad setting, a missing certificate or a key that does not match stops the start with one
line naming the problem and exit status 2, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from services.common.serving import TlsConfigError, serve
from services.common.settings import ServiceSettings, SettingsRefused

if TYPE_CHECKING:  # the backup code (Alembic) loads only when a backup command runs
    from services.common.backup import BackupSpec

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


BackupDir = Annotated[
    Path, typer.Option("--output-dir", help="Folder the archive is written to (created if needed).")
]
BackupKeep = Annotated[
    int,
    typer.Option(
        "--keep", min=0, help="Then delete all but the newest N archives in that folder; 0 = all."
    ),
]
RestoreForce = Annotated[
    bool,
    typer.Option("--force", help="Replace a target database (and folders) that are not empty."),
]


def backup_service(spec: BackupSpec, database_url: str, output_dir: Path, keep: int) -> None:
    """``<service> backup``: write one archive, then prune old ones when asked."""
    from datetime import UTC, datetime

    from services.common.backup import (
        BackupError,
        archive_name,
        create_backup,
        prune_archives,
    )
    from services.common.db import Database

    db = Database.connect(database_url)
    try:
        output = output_dir / archive_name(spec.service, datetime.now(UTC))
        manifest = create_backup(spec, db, output)
    except BackupError as exc:
        typer.echo(f"backup refused: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        db.dispose()
    rows = sum(t["rows"] for t in manifest["database"]["tables"])
    typer.echo(
        f"{output}: {spec.service} at schema {manifest['schema_revision']}, {rows} rows, "
        f"{len(manifest['members'])} members"
    )
    for path in prune_archives(output_dir, spec.service, keep) if keep else []:
        typer.echo(f"deleted old backup {path}")


def restore_service(spec: BackupSpec, database_url: str, archive: Path, force: bool) -> None:
    """``<service> restore``: verify the archive, then restore it (refusals exit with 1)."""
    from services.common.backup import BackupError, restore_backup
    from services.common.db import Database

    db = Database.connect(database_url)
    try:
        manifest = restore_backup(spec, db, archive, force=force)
    except BackupError as exc:
        typer.echo(f"restore refused: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        db.dispose()
    typer.echo(
        f"restored {spec.service} from {archive} (made {manifest['created_at']} "
        f"at schema {manifest['schema_revision']})"
    )
