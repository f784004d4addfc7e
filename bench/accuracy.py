"""The simulator's ``--method all`` table on synthetic federations over several seeds
(mean and spread), FedMedCLIP variants, and the goals of issue 14 with paired differences.

Each seed changes the per-site train/validation/test split, the initial weights and the
training order; the images and their cached embeddings are shared by every run. Each run
is read out at its best mean-validation round. Goals, per federation (``--federations``:
the Dirichlet 0.5 label skew and the rare-class scenario, where each hospital holds only 6
images of each of two classes that the other hospitals hold plenty of):

* FedMedCLIP's mean balanced accuracy >= the local head's: the paired difference per seed,
  its mean, sd and minimum;
* recall on each site's rare classes (fewer than 5 training examples there), pooled over
  sites and seeds because a site holds a handful of such test images: FedMedCLIP vs local
  vs FedAvg; the goal is 20 points above local.

    python bench/accuracy.py                        # 5 seeds, both federations
    python bench/accuracy.py --federations dirichlet:0.3 --methods fedmedclip,local,fedavg
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

from common import add_data_args, embedded_federation, machine, setup

from fedmedclip.enums import SimulationMethod
from fedmedclip.simulator import SimulationConfig, run_method
from fedmedclip.simulator.report import method_summary
from fedmedclip.simulator.runner import majority_baseline

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "ece")
VARIANTS = {
    "FedMedCLIP (defaults)": {},
    "no local head as the incumbent": {"local_head": False},
    "no class statistics": {"class_statistics": False},
    "neither (the previous defaults)": {"local_head": False, "class_statistics": False},
    "previous defaults: no per-site standardisation and plain loss": {
        "standardise_inputs": False,
        "balanced_loss": False,
    },
    "no per-site standardisation": {"standardise_inputs": False},
    "plain loss (no class prior)": {"balanced_loss": False},
    "paper: entropy ensemble + text prototypes + no pruning": {
        "combination": "entropy",
        "learn_prototypes": False,
        "prune_weight": 0.0,
    },
    "entropy ensemble + learnable prototypes": {"combination": "entropy"},
    "head branch only": {"combination": "head"},
    "no pruning": {"prune_weight": 0.0},
    "reference optimiser settings": {"settings": "reference"},
}


def _cell(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def _table(title: str, rows: dict[str, list[dict]]) -> None:
    print(f"\n## {title}\n")
    print("| | test acc | balanced acc | macro-F1 | ECE | up KB/client/round | time s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, runs in rows.items():
        cells = [_cell([r["test"][m] for r in runs]) for m in METRICS]
        up = statistics.mean(r["bytes_up_per_client_per_round"] for r in runs) / 1000
        seconds = statistics.mean(r["seconds"] for r in runs)
        print(f"| {name} | " + " | ".join(cells) + f" | {up:,.1f} | {seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser, per_hospital=100)
    parser.add_argument("--backbone", default="ViT-S-32")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--federations",
        default="dirichlet:0.5,rare:2:6",
        help="comma-separated: dirichlet:ALPHA (label skew) or rare:K:M (each hospital holds "
        "M images of each of K classes)",
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    parser.add_argument("--methods", default=",".join(SimulationMethod))
    parser.add_argument(
        "--fedavg-epochs",
        type=int,
        default=1,
        help="local epochs of FedAvg (1 keeps the run near 5 min on 2 cores; "
        "match --local-epochs for the equal-epoch comparison)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    workdir = setup(args)
    report = {}
    started = time.perf_counter()
    for spec in args.federations.split(","):
        kind, _, value = spec.strip().partition(":")
        if kind == "dirichlet":
            args.alpha, args.rare = float(value), None
        elif kind == "rare":
            args.rare = value
        else:
            parser.error(f"unknown federation {spec!r}: use dirichlet:ALPHA or rare:K:M")
        report[spec] = run_federation(args, workdir)
    print(f"\nmachine: {machine()}; wall time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def run_federation(args: argparse.Namespace, workdir: Path) -> dict:
    """Every method and variant over the seeds on one federation; prints its tables."""
    methods = [m.strip() for m in args.methods.split(",")]
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    table: dict[str, list[dict]] = {m: [] for m in methods} | {"majority class": []}
    variants: dict[str, list[dict]] = {v: [] for v in chosen}
    for seed in range(args.seeds):
        federation, _ = embedded_federation(args, workdir, args.backbone, split_seed=seed)
        config = SimulationConfig(
            rounds=args.rounds, local_epochs=args.local_epochs, seed=seed, device=args.device
        )
        for method in methods:
            if method == "fedavg":
                run = run_method(
                    federation, method, dataclasses.replace(config, local_epochs=args.fedavg_epochs)
                )
            else:
                run = run_method(federation, method, config)
            table[method].append(method_summary(run))
            print(f"seed {seed} {method}: {table[method][-1]['test']['accuracy']:.3f}", flush=True)
        majority = majority_baseline(federation)["test"]
        table["majority class"].append(
            {"test": majority, "bytes_up_per_client_per_round": 0.0, "seconds": 0.0}
        )
        for name in chosen:
            options = VARIANTS[name]
            if not options and "fedmedclip" in methods:  # the defaults ran above
                variants[name].append(table["fedmedclip"][-1])
                continue
            variant = dataclasses.replace(config, **options)
            variants[name].append(method_summary(run_method(federation, "fedmedclip", variant)))

    mix = f"rare-class scenario {args.rare}" if args.rare else f"Dirichlet {args.alpha}"
    print(
        f"\n# Federation: {mix}\n\ndata: {args.hospitals} synthetic hospitals x "
        f"{args.per_hospital} images, {args.classes} classes, {mix}; backbone "
        f"{args.backbone} with RANDOM weights; {args.rounds} rounds x {args.local_epochs} "
        f"local epochs (FedAvg: "
        f"{args.fedavg_epochs}); int4 updates; "
        f"{args.seeds} seeds (mean ± sd over seeds of the mean over sites)"
    )
    _table("methods side by side", table)
    _table("FedMedCLIP variants", variants)
    _goals(table | {f"variant: {k}": v for k, v in variants.items()})
    return {"methods": table, "variants": variants}


def _rare(run: dict) -> tuple[float, float]:
    """Rare-class hits and count of one run, summed over its sites (test split)."""
    sites = run.get("test_per_site", {}).values()
    return sum(s["rare_hits"] for s in sites), sum(s["rare_count"] for s in sites)


def _goals(runs: dict[str, list[dict]]) -> None:
    """Paired differences to the local head: balanced accuracy and rare-class recall."""
    if "local" not in runs:
        return
    local = runs["local"]
    print("\n## Against the local head (paired by seed)\n")
    print(
        "| method | balanced acc - local, points: mean ± sd (min) | rare-class recall "
        "(hits / images) | recall - local, points |"
    )
    print("|---|---:|---:|---:|")
    local_hits, local_n = map(sum, zip(*(_rare(r) for r in local), strict=True))
    local_recall = local_hits / local_n if local_n else float("nan")
    for name, series in runs.items():
        if name == "majority class" or len(series) != len(local):
            continue
        diffs = [
            100 * (r["test"]["balanced_accuracy"] - lr["test"]["balanced_accuracy"])
            for r, lr in zip(series, local, strict=True)
        ]
        spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        hits, n = map(sum, zip(*(_rare(r) for r in series), strict=True))
        recall = hits / n if n else float("nan")
        print(
            f"| {name} | {statistics.mean(diffs):+.1f} ± {spread:.1f} ({min(diffs):+.1f}) | "
            f"{recall:.3f} ({hits:.0f} / {n:.0f}) | {100 * (recall - local_recall):+.1f} |"
        )


if __name__ == "__main__":
    main()
