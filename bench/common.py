"""Set-up shared by the benchmarks: a synthetic federation on disk, the machine description."""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import torch

from fedmedclip.backbone import Backbone, load_backbone
from fedmedclip.data.synth import synthesize_federation
from fedmedclip.simulator import Federation, load_federation


def add_data_args(parser: argparse.ArgumentParser, *, per_hospital: int, threads: int = 0) -> None:
    """Options describing the synthetic federation and where it is written."""
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--per-hospital", type=int, default=per_hospital)
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew")
    parser.add_argument(
        "--rare",
        default=None,
        help="K:M: the rare-class scenario instead of the Dirichlet mix (each hospital holds "
        "M images of each of K classes, see fedmedclip.data.synth)",
    )
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="reuse data and feature cache (default: temp)"
    )
    parser.add_argument(
        "--threads", type=int, default=threads, help="torch threads (0: torch's default)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")


def setup(args: argparse.Namespace) -> Path:
    """Apply ``--threads`` and return the working folder."""
    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fedmedclip-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def synthetic_data(args: argparse.Namespace, workdir: Path) -> Path:
    """Write the synthetic federation once per working folder."""
    rare = parse_rare(getattr(args, "rare", None))
    mix = f"r{rare[0]}x{rare[1]}" if rare else f"a{args.alpha}"
    root = workdir / (
        f"synth-h{args.hospitals}-c{args.classes}-n{args.per_hospital}-{mix}"
        f"-s{args.data_seed}-i{args.image_size}"
    )
    if not root.exists():
        synthesize_federation(
            root,
            hospitals=args.hospitals,
            classes=args.classes,
            per_hospital=args.per_hospital,
            seed=args.data_seed,
            alpha=args.alpha,
            image_size=args.image_size,
            rare=rare,
        )
    return root


def parse_rare(text: str | None) -> tuple[int, int] | None:
    """``"K:M"`` -> (K, M); None stays None."""
    if not text:
        return None
    k, _, m = text.partition(":")
    return int(k), int(m)


def embedded_federation(
    args: argparse.Namespace, workdir: Path, backbone_name: str, split_seed: int = 0
) -> tuple[Federation, Backbone]:
    """The synthetic federation embedded with a random-weight backbone (cached on disk)."""
    backbone = load_backbone(backbone_name, "none", device=args.device)
    federation = load_federation(
        synthetic_data(args, workdir),
        backbone,
        cache_dir=workdir / "feature_cache",
        split_seed=split_seed,
    )
    return federation, backbone


def machine() -> str:
    """One line naming the hardware the figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({threads} threads), {gpu}"
