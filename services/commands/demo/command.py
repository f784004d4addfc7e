"""The ``fedmedclip demo`` command: its options are the described fields of
:class:`~services.commands.demo.config.DemoConfig`; the run itself is imported only when
the command runs (it loads torch)."""

from __future__ import annotations

from typing import Any

import typer

from services.commands.demo.config import DemoConfig
from services.commands.options import with_config_options


@with_config_options(DemoConfig)
def demo(settings: dict[str, Any]) -> None:
    """Run the hub, hospital nodes and inference APIs on this machine, end to end."""
    if settings["secure_aggregation"] and settings["hospitals"] < 3:
        raise typer.BadParameter(
            "secure aggregation needs at least 3 hospitals", param_hint="--hospitals"
        )
    from services.commands.demo.run import run_demo

    run_demo(**settings)
