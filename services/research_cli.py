"""Research commands of ``fedmedclip``: ``data synth``, ``simulate`` and ``demo``.

Heavy modules (torch, open_clip, matplotlib) are imported inside the commands, so that
``fedmedclip --help`` stays quick.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

data_app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)


class MethodChoice(StrEnum):
    fedmedclip = "fedmedclip"
    fedclip = "fedclip"
    fedavg = "fedavg"
    local = "local"
    zeroshot = "zeroshot"
    all = "all"


class CodecChoice(StrEnum):
    int4 = "int4"
    int8 = "int8"
    fp16 = "fp16"
    none = "none"


class AggregationChoice(StrEnum):
    weighted_mean = "weighted_mean"
    median = "median"
    trimmed_mean = "trimmed_mean"


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="New or empty folder to write into."),
    hospitals: int = typer.Option(4, min=1, help="Number of hospital folders."),
    classes: int = typer.Option(4, min=2, help="Number of lesion classes."),
    per_hospital: int = typer.Option(200, min=4, help="Images per hospital."),
    seed: int = typer.Option(0, help="Random seed (same seed, same images)."),
    alpha: float = typer.Option(0.5, min=0.0, help="Dirichlet label skew (small = strong)."),
    image_size: int = typer.Option(96, min=32, help="Image side in pixels."),
) -> None:
    """Write a synthetic federation: one ImageFolder per hospital plus classes.json."""
    from rich.console import Console
    from rich.progress import Progress

    from fedmedclip.data.synth import synthesize_federation

    console = Console()
    try:
        with Progress(console=console) as progress:
            task = progress.add_task("writing images", total=hospitals * per_hospital)
            summary = synthesize_federation(
                out,
                hospitals=hospitals,
                classes=classes,
                per_hospital=per_hospital,
                seed=seed,
                alpha=alpha,
                image_size=image_size,
                progress=lambda done: progress.update(task, completed=done),
            )
    except (FileExistsError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"wrote {summary.total} images for {hospitals} hospitals into {out}")
    for name, counts in summary.per_hospital.items():
        console.print(f"  {name}: " + ", ".join(f"{c} {n}" for n, c in counts.items()))


def simulate(
    data: Path = typer.Option(
        ...,
        "--data",
        exists=True,
        file_okay=False,
        help="Folder with one sub-folder per hospital (ImageFolder each).",
    ),
    rounds: int = typer.Option(10, min=1, help="Federated rounds."),
    local_epochs: int = typer.Option(5, "--local-epochs", min=1, help="Local epochs per round."),
    backbone: str = typer.Option("ViT-S-32", help="open_clip architecture."),
    pretrained: str = typer.Option(
        "none", help="open_clip tag, local checkpoint path, or none (random weights)."
    ),
    method: MethodChoice = typer.Option(MethodChoice.all, help="Method to run, or all."),
    codec: CodecChoice = typer.Option(CodecChoice.int4, help="Update encoding on the wire."),
    error_feedback: bool = typer.Option(
        False, help="Sites carry what quantisation lost over to their next update."
    ),
    seed: int = typer.Option(0, help="Seed of splits, initial weights and training."),
    out: Path = typer.Option(Path("sim-out"), "--out", help="Where the report is written."),
    lr: float = typer.Option(1e-3, min=0.0, help="Learning rate of the adapter methods."),
    lr_search: str = typer.Option(
        "",
        help="Comma-separated factors of the learning rate to try (e.g. 0.3,1,3); "
        "the run with the best validation accuracy is kept.",
    ),
    learn_prototypes: bool = typer.Option(
        True, help="FedMedCLIP: learn class prototypes, federated with the FAM."
    ),
    combination: str = typer.Option(
        "choose",
        help="FedMedCLIP: how each site combines its branches: choose (on validation), "
        "entropy (the paper's ensemble), head or fam.",
    ),
    settings: str = typer.Option(
        "ours", help="Optimiser settings: ours, or reference (the authors'; docs/method.md)."
    ),
    prune_weight: float = typer.Option(
        0.1, min=0.0, help="Pruning pressure on the masked layers' row thresholds."
    ),
    calibrate: bool = typer.Option(
        False, help="Fit each branch's temperature on the validation split."
    ),
    adaptive_kd: bool = typer.Option(True, help="FedMedCLIP: entropy-weighted distillation."),
    aggregation: AggregationChoice = typer.Option(
        AggregationChoice.weighted_mean, help="Aggregation rule at the hub."
    ),
    batch_size: int = typer.Option(64, min=2, help="Local batch size."),
    fedavg_blocks: int = typer.Option(2, min=1, help="FedAvg: last vision blocks fine-tuned."),
    fedavg_lr: float = typer.Option(1e-4, min=0.0, help="FedAvg: encoder learning rate."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    cache_dir: Path | None = typer.Option(
        None, help="Feature cache folder (default: OUT/feature_cache)."
    ),
    val_fraction: float = typer.Option(0.15, help="Share of each site held out for validation."),
    test_fraction: float = typer.Option(0.2, help="Share of each site held out for testing."),
    prompt_template: str = typer.Option("a picture of a {}.", help="Class prompt template."),
    dp_clip_norm: float | None = typer.Option(
        None,
        help="Differential privacy: clip each site's whole update to this L2 norm "
        "(with --dp-noise-multiplier; see docs/privacy.md).",
    ),
    dp_noise_multiplier: float | None = typer.Option(
        None, help="Differential privacy: noise standard deviation over the clip norm."
    ),
    dp_delta: float = typer.Option(1e-5, help="Differential privacy: delta of the epsilon."),
) -> None:
    """Compare FedMedCLIP with baselines on a federation folder and write a report."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from fedmedclip.backbone import BackboneError, load_backbone, resolve_device
    from fedmedclip.data.datasets import DatasetError
    from fedmedclip.simulator import (
        METHODS,
        SimulationConfig,
        load_federation,
        run_simulation,
        write_report,
    )
    from fedmedclip.simulator.methods import METHOD_CLASSES

    console = Console()
    try:
        factors = tuple(float(f) for f in lr_search.split(",") if f.strip()) or (1.0,)
        config = SimulationConfig(
            rounds=rounds,
            local_epochs=local_epochs,
            lr=lr,
            batch_size=batch_size,
            codec=codec.value,
            error_feedback=error_feedback,
            aggregation_rule=aggregation.value,
            learn_prototypes=learn_prototypes,
            combination=combination,
            settings=settings,
            prune_weight=prune_weight,
            calibrate=calibrate,
            adaptive_kd=adaptive_kd,
            seed=seed,
            device=resolve_device(device),
            lr_factors=factors,
            fedavg_blocks=fedavg_blocks,
            fedavg_lr=fedavg_lr,
            dp_clip_norm=dp_clip_norm,
            dp_noise_multiplier=dp_noise_multiplier,
            dp_delta=dp_delta,
        )
        methods = list(METHODS) if method is MethodChoice.all else [method.value]
        for name in methods:
            METHOD_CLASSES[name].check_config(config)
    except ValueError as exc:
        raise _fail(f"invalid settings: {exc}") from exc

    try:
        model = load_backbone(backbone, pretrained, device=config.device)
    except BackboneError as exc:
        raise _fail(str(exc)) from exc
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
                split_seed=seed,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except (DatasetError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    console.print(
        f"{len(federation.sites)} sites, {federation.n_classes} classes; "
        f"{federation.images_encoded} images encoded in {federation.embed_seconds:.1f} s "
        "(the others came from the feature cache)"
    )

    total_rounds = sum(rounds * len(factors) for name in methods if METHOD_CLASSES[name].trains)
    with Progress(*progress_columns, console=console) as progress:
        task = progress.add_task("rounds", total=total_rounds)

        def on_round(name: str, record) -> None:
            progress.console.print(
                f"{name:>10} round {record.round}/{rounds}: "
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


def demo(
    rounds: int = typer.Option(3, min=1, help="Federated rounds."),
    hospitals: int = typer.Option(3, min=1, help="Simulated hospitals."),
    backbone: str = typer.Option("ViT-S-32", help="open_clip architecture."),
    pretrained: str = typer.Option("none", help="open_clip tag, checkpoint path, or none."),
    out: Path = typer.Option(Path("demo-out"), "--out", help="Working folder of the demo."),
    redis_url: str = typer.Option("", help="Redis URL for real Celery workers (empty: eager)."),
) -> None:
    """Run the hub, hospital nodes and inference APIs on this machine, end to end."""
    from services.demo import run_demo

    run_demo(
        rounds=rounds,
        hospitals=hospitals,
        backbone=backbone,
        pretrained=pretrained,
        out=out,
        redis_url=redis_url,
    )
