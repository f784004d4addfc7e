"""Research commands of ``fedmedclip``: ``data synth``, ``simulate`` and ``demo``.

Heavy modules (torch, open_clip, matplotlib) are imported inside the commands, so that
``fedmedclip --help`` stays quick.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from fedmedclip.enums import (
    AggregationRule,
    DPMode,
    OptimizerSettings,
    SimulationCodec,
    SimulationCombination,
    SimulationMethod,
)

data_app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)

ALL_METHODS = "all"
# The choices of ``--method``: every simulator method, or all of them. Built from the enum
# so a new method is offered without touching this file.
MethodChoice = StrEnum(
    "MethodChoice", {**{m.name: m.value for m in SimulationMethod}, ALL_METHODS: ALL_METHODS}
)


DATA = "Data"
METHOD = "Method"
PRIVACY = "Privacy"
OUTPUT = "Output and run"
"""Panels of ``simulate --help``: its options read by topic rather than as one list."""


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
        raise _fail(str(exc)) from exc
    finally:
        progress.stop()
    console.print(f"wrote {summary.total} images for {hospitals} hospitals into {out}")
    for name, counts in summary.per_hospital.items():
        console.print(f"  {name}: " + ", ".join(f"{c} {n}" for n, c in counts.items()))


def _share(value: float) -> float:
    """``--val-fraction`` and ``--test-fraction``: each split needs some images."""
    if not 0 < value < 1:
        raise typer.BadParameter(
            f"{value} is not a share of the images: give a number between 0 and 1 (exclusive)"
        )
    return value


def _parse_methods(text: str) -> list[str]:
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
    return names


def simulate(
    data: Path = typer.Option(
        ...,
        "--data",
        exists=True,
        file_okay=False,
        help="Folder with one sub-folder per hospital (ImageFolder each).",
        rich_help_panel=DATA,
    ),
    rounds: int = typer.Option(10, min=1, help="Federated rounds.", rich_help_panel=METHOD),
    local_epochs: int = typer.Option(
        5, "--local-epochs", min=1, help="Local epochs per round.", rich_help_panel=METHOD
    ),
    backbone: str = typer.Option("ViT-S-32", help="open_clip architecture.", rich_help_panel=DATA),
    pretrained: str = typer.Option(
        "none",
        help="open_clip tag, local checkpoint path, or none (random weights).",
        rich_help_panel=DATA,
    ),
    method: str = typer.Option(
        MethodChoice.all.value,
        metavar="<method,...>",
        help="One of "
        + ", ".join(m for m in MethodChoice if m is not MethodChoice.all)
        + "; several, comma-separated; or all.",
        rich_help_panel=METHOD,
    ),
    codec: SimulationCodec = typer.Option(
        SimulationCodec.int4, help="Update encoding on the wire.", rich_help_panel=METHOD
    ),
    error_feedback: bool = typer.Option(
        False,
        help="Sites carry what quantisation lost over to their next update.",
        rich_help_panel=METHOD,
    ),
    seed: int = typer.Option(
        0, help="Seed of splits, initial weights and training.", rich_help_panel=OUTPUT
    ),
    out: Path = typer.Option(
        Path("sim-out"), "--out", help="Where the report is written.", rich_help_panel=OUTPUT
    ),
    lr: float = typer.Option(
        1e-3, min=0.0, help="Learning rate of the adapter methods.", rich_help_panel=METHOD
    ),
    lr_search: str = typer.Option(
        "",
        help="Comma-separated factors of the learning rate to try (e.g. 0.3,1,3); "
        "the run with the best validation balanced accuracy is kept.",
        rich_help_panel=METHOD,
    ),
    learn_prototypes: bool = typer.Option(
        True,
        help="FedMedCLIP: learn class prototypes, federated with the FAM.",
        rich_help_panel=METHOD,
    ),
    class_statistics: bool = typer.Option(
        True,
        help="FedMedCLIP: sites share class statistics and may choose their discriminant.",
        rich_help_panel=METHOD,
    ),
    local_head: bool = typer.Option(
        True,
        help="FedMedCLIP: each site also trains a head alone, the incumbent of its choice.",
        rich_help_panel=METHOD,
    ),
    combination: SimulationCombination = typer.Option(
        SimulationCombination.choose,
        help="FedMedCLIP: how each site combines its branches: choose (on validation), "
        "entropy (the paper's ensemble), head or fam.",
        rich_help_panel=METHOD,
    ),
    settings: OptimizerSettings = typer.Option(
        OptimizerSettings.ours,
        help="Optimiser settings: ours, or reference (the authors'; docs/method.md).",
        rich_help_panel=METHOD,
    ),
    prune_weight: float = typer.Option(
        0.1,  # fedmedclip.trainer.DEFAULT_PRUNE_WEIGHT (not imported: torch is heavy)
        min=0.0,
        help="Pruning pressure on the masked layers' row thresholds.",
        rich_help_panel=METHOD,
    ),
    calibrate: bool = typer.Option(
        False,
        help="Fit each branch's temperature on the validation split.",
        rich_help_panel=METHOD,
    ),
    adaptive_kd: bool = typer.Option(
        True, help="FedMedCLIP: entropy-weighted distillation.", rich_help_panel=METHOD
    ),
    standardise_inputs: bool = typer.Option(
        True,
        help="Each site standardises its embeddings with its own mean and spread.",
        rich_help_panel=METHOD,
    ),
    balanced_loss: bool = typer.Option(
        True,
        help="Add the site's log class prior to the logits in training (balanced softmax).",
        rich_help_panel=METHOD,
    ),
    aggregation: AggregationRule = typer.Option(
        AggregationRule.weighted_mean,
        help="Aggregation rule at the hub.",
        rich_help_panel=METHOD,
    ),
    batch_size: int = typer.Option(64, min=2, help="Local batch size.", rich_help_panel=METHOD),
    fedavg_blocks: int = typer.Option(
        2, min=1, help="FedAvg: last vision blocks fine-tuned.", rich_help_panel=METHOD
    ),
    fedavg_lr: float = typer.Option(
        1e-4, min=0.0, help="FedAvg: encoder learning rate.", rich_help_panel=METHOD
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N.", rich_help_panel=OUTPUT),
    cache_dir: Path | None = typer.Option(
        None,
        help="Feature cache folder (default: OUT/feature_cache).",
        rich_help_panel=OUTPUT,
    ),
    val_fraction: float = typer.Option(
        0.15,
        callback=_share,
        help="Share of each site held out for validation (0 < x < 1).",
        rich_help_panel=DATA,
    ),
    test_fraction: float = typer.Option(
        0.2,
        callback=_share,
        help="Share of each site held out for testing (0 < x < 1; with the validation "
        "share, below 1).",
        rich_help_panel=DATA,
    ),
    prompt_template: str = typer.Option(
        "a picture of a {}.", help="Class prompt template.", rich_help_panel=DATA
    ),
    dp_clip_norm: float | None = typer.Option(
        None,
        help="Differential privacy: clip each site's whole update to this L2 norm "
        "(with --dp-noise-multiplier; see docs/privacy.md).",
        rich_help_panel=PRIVACY,
    ),
    dp_noise_multiplier: float | None = typer.Option(
        None,
        help="Differential privacy: noise standard deviation over the clip norm.",
        rich_help_panel=PRIVACY,
    ),
    dp_delta: float = typer.Option(
        1e-5, help="Differential privacy: delta of the epsilon.", rich_help_panel=PRIVACY
    ),
    dp_mode: DPMode = typer.Option(
        DPMode.local,
        help="Differential privacy: 'local' (each site noises its own update fully) or "
        "'distributed' (each site adds its share of the central noise; needs "
        "--secure-aggregation).",
        rich_help_panel=PRIVACY,
    ),
    server_lr: float = typer.Option(
        1.0,
        help="Scale the aggregated delta before applying it (0 < x <= 1); under DP a small "
        "value keeps the noise from saturating the FAM (see docs/privacy.md).",
        rich_help_panel=PRIVACY,
    ),
    secure_aggregation: bool = typer.Option(
        False,
        "--secure-aggregation",
        help="Run every federated round through the secure-aggregation protocol: the hub "
        "learns only the weighted mean.",
        rich_help_panel=PRIVACY,
    ),
) -> None:
    """Compare FedMedCLIP with baselines on a federation folder and write a report."""
    method_names = _parse_methods(method)
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
    from fedmedclip.simulator import (
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
            codec=codec,
            error_feedback=error_feedback,
            aggregation_rule=aggregation,
            learn_prototypes=learn_prototypes,
            class_statistics=class_statistics,
            local_head=local_head,
            combination=combination,
            settings=settings,
            prune_weight=prune_weight,
            calibrate=calibrate,
            adaptive_kd=adaptive_kd,
            standardise_inputs=standardise_inputs,
            balanced_loss=balanced_loss,
            seed=seed,
            device=resolve_device(device),
            lr_factors=factors,
            fedavg_blocks=fedavg_blocks,
            fedavg_lr=fedavg_lr,
            dp_clip_norm=dp_clip_norm,
            dp_noise_multiplier=dp_noise_multiplier,
            dp_delta=dp_delta,
            dp_mode=dp_mode,
            secure_aggregation=secure_aggregation,
            server_lr=server_lr,
        )
        methods = (
            list(SimulationMethod)
            if ALL_METHODS in method_names
            else [SimulationMethod(n) for n in method_names]
        )
        for name in methods:
            METHOD_CLASSES[name].check_config(config)
    except ValueError as exc:
        raise _fail(f"invalid settings: {exc}") from exc

    try:
        # Random weights get the visible warning below rather than a log line as well.
        model = load_backbone(backbone, pretrained, device=config.device, warn_random=False)
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
    secure_aggregation: bool = typer.Option(
        False, help="Secure rounds: the hub learns only the sum of the updates (3+ hospitals)."
    ),
) -> None:
    """Run the hub, hospital nodes and inference APIs on this machine, end to end."""
    if secure_aggregation and hospitals < 3:
        raise typer.BadParameter(
            "secure aggregation needs at least 3 hospitals", param_hint="--hospitals"
        )
    from services.demo import run_demo

    run_demo(
        rounds=rounds,
        hospitals=hospitals,
        backbone=backbone,
        pretrained=pretrained,
        out=out,
        redis_url=redis_url,
        secure_aggregation=secure_aggregation,
    )
