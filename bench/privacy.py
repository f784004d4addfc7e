"""Accuracy against epsilon: client-side (local) DP and distributed DP under secure aggregation.

Runs FedMedCLIP in the simulator on a federation folder (10 sites in docs/privacy.md) once
without DP and once per (mode, noise multiplier, server learning rate), records the mean test
accuracy at the round best on validation, the cumulative epsilon (delta 1e-5, RDP,
replace_one) and how saturated the global FAM's attention is at the end (median over the
first site's test images of the largest attention weight: 1/D when uniform, 1.0 when the
FAM keeps a single feature). Writes ``privacy.json`` and ``privacy.png`` into ``--out``.

    PYTHONPATH=shared python bench/privacy.py --data DIR --cache-dir DIR --out runs/privacy \
        --runs local:2.9:1 distributed:2.9:1 distributed:2.9:0.01 local:2.9:0.01
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from fedmedclip.backbone import load_backbone
from fedmedclip.model import build_adapter
from fedmedclip.simulator import SimulationConfig, load_federation
from fedmedclip.simulator.methods import build_method
from fedmedclip.simulator.runner import run_round


def attention_peak(method, federation) -> float:  # noqa: ANN001
    """Median largest attention weight of the global FAM over site 0's test images."""
    adapter = build_adapter(method.adapter_config)
    adapter.load_state_dict(method.global_state())
    with torch.no_grad():
        features = torch.nn.functional.normalize(federation.sites[0].test.features, dim=-1)
        return float(adapter.fam(features).max(dim=-1).values.median())


def run(federation, config: SimulationConfig) -> dict:  # noqa: ANN001
    """One FedMedCLIP run: best-on-validation test accuracy, epsilon, attention per round."""
    torch.manual_seed(config.seed)
    method = build_method("fedmedclip", federation, config)
    records, peaks = [], []
    for round_index in range(1, config.rounds + 1):
        records.append(run_round(method, federation, round_index))
        peaks.append(attention_peak(method, federation))
        print(
            f"  round {round_index}: val {records[-1].val['accuracy']:.3f} "
            f"test {records[-1].test['accuracy']:.3f} peak {peaks[-1]:.3f}",
            flush=True,
        )
    best = max(records, key=lambda r: (r.val["accuracy"], -r.round))
    return {
        "test_accuracy": best.test["accuracy"],
        "best_round": best.round,
        "epsilon": records[-1].dp_epsilon,
        "test_accuracy_by_round": [r.test["accuracy"] for r in records],
        "attention_peak_by_round": peaks,
    }


def plot(results: dict, path: Path) -> None:
    """Accuracy against epsilon, local and distributed DP side by side, no-DP as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    baseline = next((r for r in results.values() if r["mode"] == "none"), None)
    for ax, mode in zip(axes, ("local", "distributed"), strict=True):
        for lr, marker in ((1.0, "o"), (0.01, "s")):
            points = sorted(
                (r["epsilon"], r["test_accuracy"])
                for r in results.values()
                if r["mode"] == mode and r["server_lr"] == lr
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker=marker, label=f"server lr {lr:g}")
        if baseline:
            ax.axhline(baseline["test_accuracy"], color="grey", linestyle="--", label="no DP")
        ax.set_title(f"{mode} DP")
        ax.set_xlabel("epsilon over the run (delta 1e-5)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean test accuracy")
    axes[1].legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--clip-norm", type=float, default=2.4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--plot",
        type=Path,
        nargs="*",
        default=None,
        help="only plot: merge these privacy.json files into --out/privacy.png",
    )
    parser.add_argument(
        "--runs", nargs="*", default=[], help="MODE:NOISE_MULTIPLIER:SERVER_LR, e.g. local:2.9:1"
    )
    args = parser.parse_args()
    if args.plot is not None:
        merged = {k: v for f in args.plot for k, v in json.loads(f.read_text()).items()}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "privacy.json").write_text(json.dumps(merged, indent=2) + "\n")
        plot(merged, args.out / "privacy.png")
        return
    torch.set_num_threads(1)
    backbone = load_backbone("ViT-S-32", "none")
    federation = load_federation(args.data, backbone, cache_dir=args.cache_dir)
    base = SimulationConfig(
        rounds=args.rounds, local_epochs=args.local_epochs, seed=args.seed, codec="int4"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "privacy.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    plans = [] if args.no_baseline else [("none", None, 1.0)]
    for spec in args.runs:
        mode, z, lr = spec.split(":")
        plans.append((mode, float(z), float(lr)))
    for mode, z, lr in plans:
        config = (
            base
            if z is None
            else dataclasses.replace(
                base,
                dp_clip_norm=args.clip_norm,
                dp_noise_multiplier=z,
                dp_mode=mode,
                secure_aggregation=mode == "distributed",
                server_lr=lr,
            )
        )
        key = f"{mode}:{z}:{lr}"
        print(key, flush=True)
        record = run(federation, config)
        results[key] = {"mode": mode, "noise_multiplier": z, "server_lr": lr, **record}
        print(json.dumps(results[key]), flush=True)
        results_path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
