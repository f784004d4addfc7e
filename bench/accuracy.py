"""The simulator's ``--method all`` table on a synthetic federation over several seeds
(mean and spread), plus the guide's improvements against the paper's FedMedCLIP variant.

Each seed changes the per-site train/validation/test split, the initial weights and the
training order; the images and their cached embeddings are shared by every run. Each run
is read out at its best mean-validation round.

    python bench/accuracy.py                        # about 5 min on 2 cores
    python bench/accuracy.py --rounds 20 --seeds 5 --per-hospital 200 --fedavg-epochs 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

from common import add_data_args, embedded_federation, machine, setup

from fedmedclip.enums import SimulationMethod
from fedmedclip.simulator import SimulationConfig, run_method
from fedmedclip.simulator.report import method_summary
from fedmedclip.simulator.runner import majority_baseline

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "ece")
VARIANTS = {
    "FedMedCLIP, paper variant": {},
    "+ calibration": {"calibrate": True},
    "+ learnable prototypes": {"learn_prototypes": True},
    "+ both": {"calibrate": True, "learn_prototypes": True},
    "paper variant, adaptive KD off": {"adaptive_kd": False},
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
    parser.add_argument("--seeds", type=int, default=3)
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
    methods = [m.strip() for m in args.methods.split(",")]

    table: dict[str, list[dict]] = {m: [] for m in methods} | {"majority class": []}
    variants: dict[str, list[dict]] = {v: [] for v in VARIANTS}
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
        for name, options in VARIANTS.items():
            if not options and "fedmedclip" in methods:  # the paper variant ran above
                variants[name].append(table["fedmedclip"][-1])
                continue
            variant = dataclasses.replace(config, **options)
            variants[name].append(method_summary(run_method(federation, "fedmedclip", variant)))

    print(f"\nmachine: {machine()}")
    print(
        f"data: {args.hospitals} synthetic hospitals x {args.per_hospital} images, "
        f"{args.classes} classes, Dirichlet {args.alpha}; backbone {args.backbone} with RANDOM "
        f"weights; {args.rounds} rounds x {args.local_epochs} local epochs (FedAvg: "
        f"{args.fedavg_epochs}); int4 updates; "
        f"{args.seeds} seeds (mean ± sd over seeds of the mean over sites)"
    )
    _table("methods side by side", table)
    _table("FedMedCLIP variants", variants)
    if args.json:
        args.json.write_text(json.dumps({"methods": table, "variants": variants}, indent=2))


if __name__ == "__main__":
    main()
