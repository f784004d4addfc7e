"""``fedmedclip simulate``: compare FedMedCLIP with its baselines on a federation folder.

The run's settings are the fields of :class:`~fedmedclip.simulator.config.SimulationConfig`,
offered as options by :func:`~services.commands.options.with_config_options`; this module
declares only what is not a setting of the simulation: where the data, the backbone and the
report are, how the data is split, which methods run.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from fedmedclip import training_defaults as defaults
from fedmedclip.config_fields import Topic
from fedmedclip.enums import SimulationMethod
from fedmedclip.simulator.config import SimulationConfig
from services.commands.errors import fail
from services.commands.options import config_from, with_config_options

ALL_METHODS = "all"
# The choices of ``--method``: every simulator method, or all of them. Built from the enum
# so a new method is offered without touching this file.
MethodChoice = StrEnum(
    "MethodChoice", {**{m.name: m.value for m in SimulationMethod}, ALL_METHODS: ALL_METHODS}
)
AUTO_DEVICE = "auto"
"""The command's ``--device`` default: the GPU when there is one (the library's is the CPU)."""

DATA, METHOD, RUN = Topic.data.value, Topic.method.value, Topic.run.value


def _share(value: float) -> float:
    """``--val-fraction`` and ``--test-fraction``: each split needs some images."""
    if not 0 < value < 1:
        raise typer.BadParameter(
            f"{value} is not a share of the images: give a number between 0 and 1 (exclusive)"
        )
    return value


def _parse_methods(text: str) -> list[SimulationMethod]:
    """``--method``: one name, a comma-separated list (duplicates dropped) or ``all``."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    known = [choice.value for choice in MethodChoice]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        what = f"unknown method {', '.join(unknown)}" if unknown else "no method named"
        methods = ", ".join(name for name in known if name != MethodChoice.all)
        raise typer.BadParameter(
            f"{what}; give one of {methods}, several of them comma-separated, or all",
            param_hint="'--method'",
        )
    if ALL_METHODS in names:
        return list(SimulationMethod)
    return [SimulationMethod(name) for name in names]


@with_config_options(SimulationConfig, device=AUTO_DEVICE)
def simulate(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            exists=True,
            file_okay=False,
            help="Folder with one sub-folder per hospital (ImageFolder each).",
            rich_help_panel=DATA,
        ),
    ],
    settings: dict[str, Any],
    backbone: Annotated[
        str, typer.Option(help="open_clip architecture.", rich_help_panel=DATA)
    ] = "ViT-S-32",
    pretrained: Annotated[
        str,
        typer.Option(
            help="open_clip tag, local checkpoint path, or none (random weights).",
            rich_help_panel=DATA,
        ),
    ] = "none",
    method: Annotated[
        str,
        typer.Option(
            metavar="<method,...>",
            help="One of "
            + ", ".join(m for m in MethodChoice if m is not MethodChoice.all)
            + "; several, comma-separated; or all.",
            rich_help_panel=METHOD,
        ),
    ] = MethodChoice.all.value,
    out: Annotated[
        Path, typer.Option("--out", help="Where the report is written.", rich_help_panel=RUN)
    ] = Path("sim-out"),
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Feature cache folder (default: OUT/feature_cache).", rich_help_panel=RUN
        ),
    ] = None,
    val_fraction: Annotated[
        float,
        typer.Option(
            callback=_share,
            help="Share of each site held out for validation (0 < x < 1).",
            rich_help_panel=DATA,
        ),
    ] = defaults.VAL_FRACTION,
    test_fraction: Annotated[
        float,
        typer.Option(
            callback=_share,
            help="Share of each site held out for testing (0 < x < 1; with the validation "
            "share, below 1).",
            rich_help_panel=DATA,
        ),
    ] = defaults.TEST_FRACTION,
    prompt_template: Annotated[
        str, typer.Option(help="Class prompt template.", rich_help_panel=DATA)
    ] = defaults.PROMPT_TEMPLATE,
) -> None:
    """Compare FedMedCLIP with baselines on a federation folder and write a report."""
    methods = _parse_methods(method)
    if val_fraction + test_fraction >= 1:
        raise typer.BadParameter(
            f"--val-fraction {val_fraction} and --test-fraction {test_fraction} add up to "
            f"{val_fraction + test_fraction:g}, which leaves no images for training; "
            "keep their sum below 1",
            param_hint="'--val-fraction' / '--test-fraction'",
        )
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from fedmedclip.backbone import BackboneError, load_backbone, resolve_device
    from fedmedclip.data.datasets import DatasetError
    from fedmedclip.simulator import load_federation, run_simulation, write_report
    from fedmedclip.simulator.methods import METHOD_CLASSES

    console = Console()
    try:
        device = resolve_device(settings["device"])
        config = config_from(SimulationConfig, settings, device=device)
        for name in methods:
            METHOD_CLASSES[name].check_config(config)
    except ValueError as exc:
        fail(f"invalid settings: {exc}")

    try:
        # Random weights get the visible warning below rather than a log line as well.
        model = load_backbone(backbone, pretrained, device=config.device, warn_random=False)
    except BackboneError as exc:
        fail(str(exc))
    if model.is_random:
        console.print(
            "[bold yellow]WARNING: CLIP weights are RANDOM (--pretrained none).[/] The "
            "embeddings carry no pretrained knowledge: use this to exercise the platform, and "
            "judge methods against the majority-class baseline. Pass an open_clip tag or a "
            "local checkpoint path for real results."
        )
    else:
        console.print(f"backbone {model.id}")

    progress_columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*progress_columns, console=console) as progress:
            task = progress.add_task("embedding images", total=None)
            federation = load_federation(
                data,
                model,
                cache_dir=cache_dir or out / "feature_cache",
                prompt_template=prompt_template,
                val_fraction=val_fraction,
                test_fraction=test_fraction,
                split_seed=config.seed,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except (DatasetError, ValueError, OSError) as exc:
        fail(str(exc))
    console.print(
        f"{len(federation.sites)} sites, {federation.n_classes} classes; "
        f"{federation.images_encoded} images encoded in {federation.embed_seconds:.1f} s "
        "(the others came from the feature cache)"
    )

    runs_per_method = config.rounds * len(config.lr_factors)
    total_rounds = sum(runs_per_method for name in methods if METHOD_CLASSES[name].trains)
    with Progress(*progress_columns, console=console) as progress:
        task = progress.add_task("rounds", total=total_rounds)

        def on_round(name: str, record) -> None:
            progress.console.print(
                f"{name:>10} round {record.round}/{config.rounds}: "
                f"val {record.val['accuracy']:.3f} test {record.test['accuracy']:.3f} "
                f"up {record.bytes_up_per_client / 1000:,.1f} KB {record.train_seconds:.1f} s"
                + (f" ε {record.dp_epsilon:.2f}" if record.dp_epsilon is not None else "")
            )
            progress.advance(task)

        result = run_simulation(federation, methods, config, on_round=on_round)
    paths = write_report(result, out)
    _print_summary(console, result)
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))


def _print_summary(console, result) -> None:
    from rich.table import Table

    from fedmedclip.simulator.report import method_summary

    table = Table(title="test metrics at the round best on validation (mean over sites)")
    for column in ("method", "round", "acc", "bal. acc", "macro-F1", "ECE", "up KB", "time s"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, method in result.methods.items():
        s = method_summary(method)
        t = s["test"]
        table.add_row(
            name,
            str(s["best_round"]),
            f"{t['accuracy']:.3f}",
            f"{t['balanced_accuracy']:.3f}",
            f"{t['macro_f1']:.3f}",
            f"{t['ece']:.3f}",
            f"{s['bytes_up_per_client_per_round'] / 1000:,.1f}",
            f"{s['seconds']:.1f}",
        )
    m = result.majority["test"]
    table.add_row(
        "majority",
        "-",
        f"{m['accuracy']:.3f}",
        f"{m['balanced_accuracy']:.3f}",
        f"{m['macro_f1']:.3f}",
        f"{m['ece']:.3f}",
        "0",
        "0",
    )
    console.print(table)
