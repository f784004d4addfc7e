"""Bytes per client per round: our update codec vs the reference encoding vs FedAvg, and
what the compression costs in accuracy, measured in one run.

* ours: a real FAM update (one site's first local round) through ``encode_update`` as
  int4 / int8 / fp16, and the mean upload per client per round of full simulator runs;
* reference: the authors' encoding, the full FAM state as float16 bytes + zlib (level 6;
  their pickle framing, a few hundred bytes more, is left out);
* FedAvg: the whole image encoder as float32 (the paper's FedAvg), and the simulator's
  FedAvg baseline (last 2 blocks + ln_post + proj + classifier) as float32.

Accuracy: FedMedCLIP in the simulator with each codec, int4 with error feedback (each
site carries its quantisation residual into its next update), and uncompressed
(``none``) float32 updates; same seeds and splits; mean, spread and the paired
difference to ``none`` over seeds.

    python bench/update_bytes.py                    # ViT-S-32 and ViT-B-32, about 5 min
    python bench/update_bytes.py --backbones ViT-S-32 --seeds 6 --per-hospital 150
"""

from __future__ import annotations

import argparse
import json
import statistics
import zlib
from pathlib import Path

import numpy as np
import torch
from common import add_data_args, embedded_federation, machine, setup

from fedmedclip.codec import decode_update, encode_update, state_delta, update_norm
from fedmedclip.enums import Quantization
from fedmedclip.model import expected_shapes
from fedmedclip.simulator import SimulationConfig, run_method
from fedmedclip.simulator.fedavg import FineTunedEncoder
from fedmedclip.simulator.methods import build_method
from fedmedclip.simulator.runner import run_round


def reference_bytes(state: dict[str, torch.Tensor]) -> int:
    """The authors' encoding: every tensor of the full state as float16, then zlib."""
    raw = b"".join(state[k].to(torch.float16).numpy().tobytes() for k in sorted(state))
    return len(zlib.compress(raw, 6))


def one_update(federation, config: SimulationConfig) -> dict:
    """Sizes and reconstruction errors of one real local update under every encoding."""
    method = build_method("fedmedclip", federation, config)
    base = method.global_state()
    update = method.train_site(0, 1)
    delta = state_delta(update.state, base)
    norm = update_norm(delta)
    out = {"reference": {"bytes": reference_bytes(update.state), "rel_error": None}}
    out["none"] = {"bytes": 4 * sum(v.numel() for v in delta.values()), "rel_error": 0.0}
    shapes = expected_shapes(method.adapter_config)
    for codec in Quantization:
        payload = encode_update(
            delta, base_version=0, quantization=codec, omit_rows=update.omit_rows
        )
        decoded = decode_update(payload, expected_shapes=shapes, base_version=0).delta
        error = update_norm({k: decoded[k] - delta[k] for k in delta})
        out[codec.value] = {"bytes": len(payload), "rel_error": error / norm}
    return out


def fedavg_bytes(federation) -> dict[str, int]:
    visual = federation.backbone.model.visual
    encoder = 4 * sum(p.numel() for p in visual.parameters())
    tuned = FineTunedEncoder(visual, 2, federation.text_prototypes).trained_state()
    return {
        "full image encoder (fp32)": encoder,
        "simulator FedAvg, last 2 blocks + classifier (fp32)": 4
        * sum(t.numel() for t in tuned.values()),
    }


ENCODINGS = {
    "int4": {"codec": "int4"},
    "int4 + error feedback": {"codec": "int4", "error_feedback": True},
    "int8": {"codec": "int8"},
    "fp16": {"codec": "fp16"},
    "none": {"codec": "none"},
}


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def accuracy_runs(args, workdir: Path, backbone: str) -> dict[str, dict]:
    """Best-on-validation test accuracy and upload size per encoding, over seeds."""
    runs: dict[str, dict[str, list[float]]] = {e: {"acc": [], "bytes": []} for e in ENCODINGS}
    for seed in range(args.seeds):
        federation, _ = embedded_federation(args, workdir, backbone, split_seed=seed)
        for encoding, options in ENCODINGS.items():
            config = SimulationConfig(
                rounds=args.rounds,
                local_epochs=args.local_epochs,
                seed=seed,
                device=args.device,
                **options,
            )
            result = run_method(federation, "fedmedclip", config)
            runs[encoding]["acc"].append(result.best.test["accuracy"])
            runs[encoding]["bytes"].append(
                float(np.mean([r.bytes_up_per_client for r in result.rounds]))
            )
    return runs


def pruning_runs(args, workdir: Path, backbone: str, weights: list[float]) -> dict[str, dict]:
    """Per pruning pressure: mean upload over the rounds against the reference encoding of
    the same state, FAM rows still kept in the final global model, and test metrics at the
    best validation round (int4 updates; pruned rows are left out of every update)."""
    out: dict[str, dict] = {}
    for weight in weights:
        rows: dict[str, list[float]] = {"ratio": [], "kept": [], "acc": [], "bal": []}
        for seed in range(args.seeds):
            federation, _ = embedded_federation(args, workdir, backbone, split_seed=seed)
            config = SimulationConfig(
                rounds=args.rounds,
                local_epochs=args.local_epochs,
                seed=seed,
                device=args.device,
                prune_weight=weight,
            )
            method = build_method("fedmedclip", federation, config)
            reference = reference_bytes(method.global_state())
            records = [run_round(method, federation, r) for r in range(1, args.rounds + 1)]
            best = max(records, key=lambda r: (r.val["accuracy"], -r.round))
            rows["ratio"].append(
                float(np.mean([r.bytes_up_per_client for r in records])) / reference
            )
            kept = [layer.kept_rows().float().mean() for layer in method.adapter.masked_layers()]
            rows["kept"].append(float(torch.stack(kept).mean()))
            rows["acc"].append(best.test["accuracy"])
            rows["bal"].append(best.test["balanced_accuracy"])
        out[f"{weight:g}"] = rows
    base = out[f"{weights[0]:g}"]["bal"]
    print(f"\n## Pruning pressure ({backbone}, int4, {args.seeds} seeds)\n")
    print(
        "| prune_weight | upload / reference (mean over rounds) | FAM rows kept (final) "
        f"| test acc | balanced acc | balanced acc - prune_weight {weights[0]:g}, points |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for weight, rows in out.items():
        diffs = [100 * (a - b) for a, b in zip(rows["bal"], base, strict=True)]
        print(
            f"| {weight} | {statistics.mean(rows['ratio']):.3f} "
            f"| {statistics.mean(rows['kept']):.2f} "
            f"| {statistics.mean(rows['acc']):.3f} | {statistics.mean(rows['bal']):.3f} "
            f"| {statistics.mean(diffs):+.1f} ± {_sd(diffs):.1f} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser, per_hospital=100)
    parser.add_argument("--backbones", default="ViT-S-32,ViT-B-32")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3, help="accuracy runs per codec")
    parser.add_argument(
        "--prune-weights",
        default="0,0.1,1,10",
        help="pruning pressures to compare (int4); empty to skip",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    workdir = setup(args)
    backbones = [b.strip() for b in args.backbones.split(",")]
    config = SimulationConfig(local_epochs=args.local_epochs, device=args.device)

    report = {"machine": machine(), "backbones": {}}
    print(f"machine: {machine()}\n")
    for backbone in backbones:
        federation, _ = embedded_federation(args, workdir, backbone)
        sizes = one_update(federation, config)
        reference = sizes["reference"]["bytes"]
        print(f"## {backbone} (D={federation.dim}), one real FAM update (site 0, round 1)\n")
        print("| encoding | bytes | vs reference | relative L2 error |")
        print("|---|---:|---:|---:|")
        for name, entry in sizes.items():
            error = "-" if entry["rel_error"] is None else f"{entry['rel_error']:.4f}"
            print(f"| {name} | {entry['bytes']:,} | {entry['bytes'] / reference:.3f} | {error} |")
        others = fedavg_bytes(federation)
        for name, n in others.items():
            print(f"| FedAvg: {name} | {n:,} | {n / reference:.1f} | - |")
        print()
        report["backbones"][backbone] = {"dim": federation.dim, "one_update": sizes} | {
            "fedavg": others
        }

    backbone = backbones[0]
    runs = accuracy_runs(args, workdir, backbone)
    none_acc = runs["none"]["acc"]
    print(
        f"## FedMedCLIP accuracy by update encoding ({backbone}, {args.rounds} rounds, "
        f"{args.seeds} seeds; test accuracy at the best validation round)\n"
    )
    print(
        "| encoding | upload bytes/client/round | test acc mean | sd "
        "| paired diff vs none: mean | sd |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for encoding, values in runs.items():
        acc = values["acc"]
        diffs = [100 * (a - b) for a, b in zip(acc, none_acc, strict=True)]
        print(
            f"| {encoding} | {statistics.mean(values['bytes']):,.0f} | {statistics.mean(acc):.3f} "
            f"| {_sd(acc):.3f} | {statistics.mean(diffs):+.1f} points | {_sd(diffs):.1f} points |"
        )
    report["accuracy"] = {"backbone": backbone, "rounds": args.rounds, "runs": runs}
    if args.prune_weights:
        weights = [float(w) for w in args.prune_weights.split(",")]
        report["pruning"] = pruning_runs(args, workdir, backbone, weights)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
