"""``fedmedclip hub models``: global model versions, production, downloads."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from services.commands.errors import fail
from services.commands.hub.connection import UNUSABLE, admin_client
from services.commands.hub.output import AsJson, fields_table, optional, print_json, show, when

if TYPE_CHECKING:
    from fedmedclip.schemas import ModelInfo

app = typer.Typer(no_args_is_help=True, help="Global model versions and production.")

Version = Annotated[str, typer.Argument(help="A version number, or `production`.")]


def _version(value: str) -> int | str:
    if value == "production":
        return value
    if value.isdigit():
        return int(value)
    raise typer.BadParameter(f"{value!r} is neither a version number nor 'production'")


def _metrics(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in sorted(metrics.items())) or "-"


def _model_table(info: ModelInfo) -> Table:
    return fields_table(
        [
            ("production", "yes" if info.is_production else "no"),
            ("parent version", info.parent_version),
            ("round", info.round_id),
            ("contributors", ", ".join(info.contributors) or "-"),
            ("metrics", _metrics(info.metrics)),
            ("sha256", info.blob_sha256),
            ("created", when(info.created_at)),
        ],
        title=f"model v{info.version}",
    )


@app.command("list")
def models_list(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List global model versions, oldest first; * marks production."""
    with admin_client(ctx) as hub:
        models = hub.list_models()
    table = Table("version", "prod", "parent", "round", "contributors", "metrics", title="models")
    table.add_column("created", no_wrap=True)
    for info in models:
        table.add_row(
            f"v{info.version}",
            "*" if info.is_production else "",
            optional(info.parent_version),
            optional(info.round_id),
            str(len(info.contributors)),
            _metrics(info.metrics),
            when(info.created_at),
        )
    show(models, as_json, table)


@app.command("show")
def models_show(ctx: typer.Context, version: Version, as_json: AsJson = False) -> None:
    """Show one version's metadata (contributors, metrics, sha256)."""
    with admin_client(ctx) as hub:
        info = hub.model_info(_version(version))
    show(info, as_json, _model_table(info))


@app.command("promote")
def models_promote(
    ctx: typer.Context,
    version: Annotated[int, typer.Argument(min=0, help="The version sites should serve.")],
    as_json: AsJson = False,
) -> None:
    """Make a version production: the one the sites' inference APIs serve."""
    with admin_client(ctx) as hub:
        info = hub.promote(version)
    show(info, as_json, _model_table(info))


@app.command("rollback")
def models_rollback(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Undo the last promotion: production returns to the version it was before."""
    with admin_client(ctx) as hub:
        info = hub.rollback()
    show(info, as_json, _model_table(info))


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a partial file never takes its name."""
    partial = path.with_name(path.name + ".part")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(f"cannot write {path}: {exc}", UNUSABLE)


@app.command("download")
def models_download(
    ctx: typer.Context,
    version: Version,
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write.")],
    as_json: AsJson = False,
) -> None:
    """Download a version's weights (safetensors), written only once they match the sha256
    the hub published."""
    with admin_client(ctx) as hub:
        info = hub.model_info(_version(version))
        data = hub.download_model(info)
    _write_atomically(output, data)
    if as_json:
        print_json(
            {
                "version": info.version,
                "path": str(output),
                "bytes": len(data),
                "sha256": info.blob_sha256,
            }
        )
    else:
        typer.echo(
            f"model v{info.version} written to {output} ({len(data)} bytes, sha256 "
            f"{info.blob_sha256} verified)"
        )
