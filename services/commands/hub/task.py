"""``fedmedclip hub task``: the task the federation learns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from fedmedclip.enums import Quantization
from services.commands.errors import fail
from services.commands.hub.connection import UNUSABLE, admin_client, invalid
from services.commands.hub.output import AsJson, fields_table, show

if TYPE_CHECKING:
    from fedmedclip.schemas import TaskSpec

app = typer.Typer(no_args_is_help=True, help="The task the federation learns.")


def _task_table(task: TaskSpec) -> Table:
    return fields_table(
        [
            ("classes", f"{', '.join(task.class_names)} ({len(task.class_names)})"),
            ("prompt template", task.prompt_template),
            ("backbone", task.backbone),
            ("weights id", task.weights_id),
            ("learn prototypes", task.fam.learn_prototypes),
            ("class statistics", task.fam.class_statistics),
            ("margin", task.fam.margin),
            ("quantization", task.fam.quantization.value),
            ("seed", task.fam.seed),
        ],
        title="task",
    )


@app.command("show")
def task_show(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Show the task."""
    with admin_client(ctx) as hub:
        task = hub.get_task()
    show(task, as_json, _task_table(task))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}", UNUSABLE)
    if not isinstance(data, dict):
        fail(f"{path} must hold a JSON object (a task)", UNUSABLE)
    return data


@app.command("set")
def task_set(
    ctx: typer.Context,
    class_names: Annotated[
        list[str] | None,
        typer.Option("--class", "-c", help="A class name, in label order (repeat)."),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="A task as JSON (the body of PUT /api/v1/task); the other "
            "options override its fields.",
        ),
    ] = None,
    prompt_template: Annotated[str | None, typer.Option(help="With one '{}'.")] = None,
    backbone: Annotated[str | None, typer.Option(help="open_clip architecture.")] = None,
    weights_id: Annotated[str | None, typer.Option(help="The CLIP weights sites use.")] = None,
    learn_prototypes: Annotated[bool | None, typer.Option(show_default=False)] = None,
    class_statistics: Annotated[
        bool | None,
        typer.Option(
            show_default=False,
            help="Sites send class statistics with their updates (on by default for a new "
            "task; docs/method.md, Class statistics).",
        ),
    ] = None,
    margin: Annotated[float | None, typer.Option(help="Row pruning margin.")] = None,
    quantization: Annotated[Quantization | None, typer.Option(help="Update encoding.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the version-0 weights.")] = None,
    as_json: AsJson = False,
) -> None:
    """Set the task and create model version 0 (refused once a round has started)."""
    from fedmedclip.schemas import TaskSpec

    body = _read_json(from_file) if from_file is not None else {}
    given = {
        "class_names": class_names or None,
        "prompt_template": prompt_template,
        "backbone": backbone,
        "weights_id": weights_id,
    }
    body |= {key: value for key, value in given.items() if value is not None}
    fam = {
        "learn_prototypes": learn_prototypes,
        "class_statistics": class_statistics,
        "margin": margin,
        "quantization": quantization,
        "seed": seed,
    }
    if any(value is not None for value in fam.values()):
        base = body.get("fam") if isinstance(body.get("fam"), dict) else {}
        body["fam"] = base | {key: value for key, value in fam.items() if value is not None}
    if "class_names" not in body:
        fail("name the classes: --class NAME (repeat) or --file TASK.json", UNUSABLE)
    try:
        task = TaskSpec.model_validate(body)
    except ValidationError as exc:
        invalid(exc)
    with admin_client(ctx) as hub:
        stored = hub.set_task(task)
    show(stored, as_json, _task_table(stored))
