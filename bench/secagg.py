"""Secure aggregation cost: bytes per site and hub CPU for n = 5, 10, 50 sites (in process).

Each round runs the real client and hub code of ``fedmedclip.secagg`` with every message
serialised to JSON, on a vector the size of the FAM delta (D = 384: 296,448 values), with one
site dropping after its upload so the hub also pays for recovery. Prints one line per n and
the ratio of the masked upload to the int4 codec's upload of the same delta.

    PYTHONPATH=shared python bench/secagg.py --sizes 5 10 50
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from fedmedclip.codec import encode_update
from fedmedclip.secagg import RoundCosts, RoundParams, run_round


def int4_bytes(dimension: int, rng: np.random.Generator) -> int:
    """Bytes of the same number of values through the int4 update codec (rows of 384)."""
    delta = {"w": torch.from_numpy(rng.normal(size=(dimension // 384, 384)).astype(np.float32))}
    return len(encode_update(delta, base_version=0, quantization="int4"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 50])
    parser.add_argument("--dimension", type=int, default=296_448)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    reference = int4_bytes(args.dimension, rng)
    print(f"dimension {args.dimension}; int4 codec upload {reference / 1e3:.0f} KB")
    print("n  degree t  up KB/site  down KB/site  up/int4  hub CPU s  site CPU s  wall s")
    for n in args.sizes:
        sites = [f"site{i:03d}" for i in range(n)]
        params = RoundParams.create(f"bench-{n}", sites, args.dimension)
        updates = {s: (rng.normal(scale=0.01, size=args.dimension), 100) for s in sites}
        costs = RoundCosts()
        started = time.perf_counter()
        aggregate = run_round(params, updates, drop_after_upload=[sites[1]], costs=costs)
        wall = time.perf_counter() - started
        expected = sum(u for u, _ in updates.values()) / n
        assert np.abs(aggregate.mean() - expected).max() < 2.0**-12
        up = statistics.mean(costs.bytes_up.values())
        down = statistics.mean(costs.bytes_down.values())
        site_cpu = statistics.mean(costs.client_cpu_seconds.values())
        print(
            f"{n:<3}{params.degree:>6} {params.threshold:>2}  {up / 1e3:>10.0f}  "
            f"{down / 1e3:>12.1f}  {up / reference:>7.2f}  {costs.hub_cpu_seconds:>9.2f}  "
            f"{site_cpu:>10.2f}  {wall:>6.1f}"
        )


if __name__ == "__main__":
    main()
