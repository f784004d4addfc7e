"""``fedmedclip pki``: create the federation CA and issue certificates for hub and nodes.

A federation operator runs ``init`` once, ``issue-server`` for the hub (and for each
site's inference API if it serves HTTPS), and ``issue-node NAME`` per hospital node; the
node's name must match its name in the hub's registry. ``inspect`` shows expiry, so
renewals can be scheduled. Leaf certificates are short-lived (90 days by default).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from services.commands.errors import USAGE, fail, report
from services.common.pki import (
    DEFAULT_CA_DAYS,
    DEFAULT_LEAF_DAYS,
    Issued,
    PkiError,
    init_ca,
    inspect_certificate,
    issue_node,
    issue_server,
)

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)

CaDir = Annotated[
    Path,
    typer.Option(
        "--dir", help="Folder of the CA (ca.crt, ca.key 0600).", envvar="FEDMEDCLIP_PKI_DIR"
    ),
]
Days = Annotated[int, typer.Option(min=1, max=3650, help="Lifetime in days.")]
OutDir = Annotated[Path | None, typer.Option("--out", help="Where to write (default: --dir).")]


def _show(issued: Issued) -> None:
    info = inspect_certificate(issued.cert)
    typer.echo(f"certificate {issued.cert}")
    typer.echo(f"private key {issued.key} (mode 0600)")
    typer.echo(f"subject     {info.subject}")
    typer.echo(f"expires     {info.not_after:%Y-%m-%d %H:%M} UTC ({info.days_left:.0f} days)")


def _issue(make: Callable[[], Issued]) -> None:
    """Run one issuing step and show what it wrote; a refusal is one line and exit 2."""
    try:
        issued = make()
    except PkiError as exc:
        fail(str(exc))
    _show(issued)


@app.command()
def init(
    ca_dir: CaDir = Path("./pki"),
    name: Annotated[str, typer.Option(help="The CA's common name.")] = "FedMedCLIP federation CA",
    days: Days = DEFAULT_CA_DAYS,
    force: Annotated[bool, typer.Option(help="Replace an existing CA.")] = False,
) -> None:
    """Create the federation CA."""
    _issue(lambda: init_ca(ca_dir, name, days=days, force=force))


@app.command("issue-server")
def issue_server_cmd(
    host: Annotated[
        list[str], typer.Option(help="DNS name or IP the server is reached by (repeat).")
    ],
    ca_dir: CaDir = Path("./pki"),
    out: OutDir = None,
    days: Days = DEFAULT_LEAF_DAYS,
) -> None:
    """Issue a server certificate (hub, inference API) for one or more host names."""
    _issue(lambda: issue_server(ca_dir, host, out_dir=out, days=days))


@app.command("issue-node")
def issue_node_cmd(
    name: Annotated[str, typer.Argument(help="The node's name in the hub's registry.")],
    ca_dir: CaDir = Path("./pki"),
    out: OutDir = None,
    days: Days = DEFAULT_LEAF_DAYS,
) -> None:
    """Issue a client certificate for a hospital node (mutual TLS with the hub)."""
    _issue(lambda: issue_node(ca_dir, name, out_dir=out, days=days))


@app.command()
def inspect(
    paths: Annotated[list[Path], typer.Argument(help="PEM certificates to show.")],
) -> None:
    """Show subject, issuer, hosts, expiry and SHA-256 fingerprint of certificates."""
    failed = False
    for path in paths:
        try:
            info = inspect_certificate(path)
        except PkiError as exc:
            report(str(exc))
            failed = True
            continue
        state = "EXPIRED" if info.days_left < 0 else f"{info.days_left:.0f} days left"
        typer.echo(f"{path}: {info.subject}")
        typer.echo(f"  issuer      {info.issuer}")
        if info.hosts:
            typer.echo(f"  hosts       {', '.join(info.hosts)}")
        typer.echo(f"  expires     {info.not_after:%Y-%m-%d %H:%M} UTC ({state})")
        typer.echo(f"  sha256      {info.fingerprint_sha256}")
    if failed:
        raise typer.Exit(USAGE)
