"""Local training time over 20 rounds: FedMedCLIP on cached features vs FedAvg fine-tuning
the image encoder, on the same synthetic data and backbone, measured in one run.

FedMedCLIP: every site's ``train_local`` for all rounds, the feature cache warm (steady
state); the one-time cache fill (every image through the encoder once) and the per-round
cache read (hashing each training image and loading its vector, which a node does before
training) are reported beside it.

FedAvg: each site's local epochs over its images, forward through the whole encoder and
backward through the fine-tuned blocks (see ``fedmedclip.simulator.fedavg``). Images are
decoded and preprocessed once beforehand (in FedAvg's favour; that set-up is not counted).
FedAvg is measured for ``--fedavg-rounds`` rounds and extrapolated linearly to ``--rounds``
(its per-round cost does not change from round to round); the output says so.

Torch runs on one thread by default (``--threads``): on a small machine shared with other
work, OpenMP threads that wait on each other turn other processes' load into large swings
of wall time, most of all for FedMedCLIP's many tiny steps.

    python bench/round_cost.py                      # ViT-S-32, about 5 min on 2 cores
    python bench/round_cost.py --backbone ViT-B-32 --fedavg-blocks 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from common import add_data_args, embedded_federation, machine, setup

from fedmedclip.feature_cache import FeatureCache
from fedmedclip.simulator import SimulationConfig
from fedmedclip.simulator.methods import build_method


def local_training_time(federation, name: str, config, rounds: int) -> tuple[float, float]:
    """Wall and process-CPU seconds of every site's ``train_site`` over ``rounds`` rounds.

    Only the local training is timed: method set-up (FedAvg decodes and preprocesses the
    images once here), evaluation and aggregation are outside the clocks. Training cost
    does not depend on the weights' values, so the rounds are timed from the same state.
    CPU time is reported too because wall time on a shared machine moves with other load.
    """
    method = build_method(name, federation, config)
    wall = cpu = 0.0
    for round_index in range(1, rounds + 1):
        for site_index in range(len(federation.sites)):
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            method.train_site(site_index, round_index)
            wall += time.perf_counter() - wall_start
            cpu += time.process_time() - cpu_start
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser, per_hospital=100, threads=1)
    parser.add_argument("--backbone", default="ViT-S-32")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--fedavg-rounds", type=int, default=1, help="FedAvg rounds measured")
    parser.add_argument(
        "--fedavg-blocks",
        default="2,all",
        help="comma-separated fine-tuned block counts to measure ('all' = every block)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    workdir = setup(args)

    federation, backbone = embedded_federation(args, workdir, args.backbone)
    if federation.images_encoded == 0:
        print("note: the feature cache was already full; cache fill time not measured")
    fill = federation.embed_seconds
    n_images = sum(len(s.train) + len(s.val) + len(s.test) for s in federation.sites)
    train_paths = [p for s in federation.sites for p in s.train.paths]
    started = time.perf_counter()
    FeatureCache(workdir / "feature_cache").encode_files(backbone, train_paths)
    lookup = time.perf_counter() - started

    config = SimulationConfig(
        rounds=args.rounds, local_epochs=args.local_epochs, device=args.device
    )
    ours, ours_cpu = local_training_time(federation, "fedmedclip", config, args.rounds)
    ours_with_lookup = ours + lookup * args.rounds

    n_blocks = len(backbone.model.visual.transformer.resblocks)
    variants = []
    for text in args.fedavg_blocks.split(","):
        blocks = n_blocks if text.strip() == "all" else int(text)
        variants.append((f"FedAvg, last {blocks} of {n_blocks} blocks", blocks, False))
    variants.append(
        (f"FedAvg, last {variants[0][1]} blocks, frozen-prefix cache", variants[0][1], True)
    )
    fedavg, fedavg_cpu = {}, {}
    scale = args.rounds / args.fedavg_rounds
    for label, blocks, prefix_cache in variants:
        fedavg_config = dataclasses.replace(
            config, fedavg_blocks=blocks, fedavg_prefix_cache=prefix_cache
        )
        wall, cpu = local_training_time(federation, "fedavg", fedavg_config, args.fedavg_rounds)
        fedavg[label], fedavg_cpu[label] = wall * scale, cpu * scale

    print(f"machine: {machine()}")
    print(
        f"data: {len(federation.sites)} sites, {n_images} images "
        f"({len(train_paths)} for training), backbone {args.backbone} (random weights), "
        f"{args.local_epochs} local epochs per round, {args.rounds} rounds"
    )
    print(f"one-time cache fill: {fill:.1f} s for {federation.images_encoded} images")
    print(f"per-round cache read of the training images: {lookup * 1000:.0f} ms")
    print(
        f"FedAvg measured over {args.fedavg_rounds} round(s) and extrapolated to "
        f"{args.rounds} rounds\n"
    )
    print(
        f"| local training, {args.rounds} rounds, all sites | wall s | CPU s "
        "| FedAvg / FedMedCLIP (wall) | (CPU) |"
    )
    print("|---|---:|---:|---:|---:|")
    print(f"| FedMedCLIP (train_local on cached features) | {ours:.2f} | {ours_cpu:.2f} | 1 | 1 |")
    print(f"| FedMedCLIP incl. per-round cache reads | {ours_with_lookup:.2f} | - | - | - |")
    for label, seconds in fedavg.items():
        print(
            f"| {label} | {seconds:.1f} | {fedavg_cpu[label]:.1f} | {seconds / ours:.0f}x "
            f"({seconds / ours_with_lookup:.0f}x incl. cache reads) "
            f"| {fedavg_cpu[label] / ours_cpu:.0f}x |"
        )
    print(
        "\nFedAvg vs FedMedCLIP including the one-time cache fill: "
        + ", ".join(
            f"{seconds / (ours_with_lookup + fill):.0f}x ({label})"
            for label, seconds in fedavg.items()
        )
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "backbone": args.backbone,
                    "rounds": args.rounds,
                    "local_epochs": args.local_epochs,
                    "images": n_images,
                    "cache_fill_seconds": fill,
                    "cache_read_seconds_per_round": lookup,
                    "fedmedclip_train_seconds": ours,
                    "fedmedclip_train_cpu_seconds": ours_cpu,
                    "fedavg_seconds_extrapolated": fedavg,
                    "fedavg_cpu_seconds_extrapolated": fedavg_cpu,
                    "fedavg_rounds_measured": args.fedavg_rounds,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
