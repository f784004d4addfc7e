"""How every command reports a failure: one line ``error: ...`` on stderr and an exit code.

No traceback reaches the user; the exit code tells a script what kind of failure it was
(each command group documents its codes, ``2`` is always bad usage or input).
"""

from __future__ import annotations

from typing import NoReturn

import typer

USAGE = 2
"""Exit code of bad usage or input: the command could not do what it was asked."""


def report(message: str) -> None:
    """Show one failure and carry on (a command that goes through several inputs)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)


def fail(message: str, code: int = USAGE) -> NoReturn:
    """Show one failure and end the command with ``code``."""
    report(message)
    raise typer.Exit(code)
