"""``fedmedclip data``: synthetic data and dataset tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.commands.errors import fail

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", help="New or empty folder to write into.")],
    hospitals: Annotated[int, typer.Option(min=1, help="Number of hospital folders.")] = 4,
    classes: Annotated[int, typer.Option(min=2, help="Number of lesion classes.")] = 4,
    per_hospital: Annotated[int, typer.Option(min=4, help="Images per hospital.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same images).")] = 0,
    alpha: Annotated[
        float, typer.Option(min=0.0, help="Dirichlet label skew (small = strong).")
    ] = 0.5,
    image_size: Annotated[int, typer.Option(min=32, help="Image side in pixels.")] = 96,
) -> None:
    """Write a synthetic federation: one ImageFolder per hospital plus classes.json."""
    from rich.console import Console
    from rich.progress import Progress

    from fedmedclip.data.synth import synthesize_federation

    console = Console()
    progress = Progress(console=console)
    task = progress.add_task("writing images", total=hospitals * per_hospital)

    def on_image(done: int) -> None:
        # The library checks the folder and the arguments before it writes anything, so
        # the bar appears only once those checks passed: a refusal draws no empty bar.
        if not progress.live.is_started:
            progress.start()
        progress.update(task, completed=done)

    try:
        summary = synthesize_federation(
            out,
            hospitals=hospitals,
            classes=classes,
            per_hospital=per_hospital,
            seed=seed,
            alpha=alpha,
            image_size=image_size,
            progress=on_image,
        )
    except (FileExistsError, ValueError) as exc:
        fail(str(exc))
    finally:
        progress.stop()
    console.print(f"wrote {summary.total} images for {hospitals} hospitals into {out}")
    for name, counts in summary.per_hospital.items():
        console.print(f"  {name}: " + ", ".join(f"{c} {n}" for n, c in counts.items()))
