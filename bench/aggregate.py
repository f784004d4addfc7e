"""Aggregation benchmark: time and peak memory to aggregate 10, 100 and 1000 FAM updates.

Runs the hub's own aggregation path (:meth:`RoundCloser.close`, what the close route and
the deadline watcher call) on an embedded SQLite database filled with encoded updates
(D=512, the ViT-B-32 FAM). Each size runs in a fresh subprocess so peak memory is its own:

* time: wall clock of ``close`` (claim, stream + decode + weighted mean, publish), measured
  without tracing;
* peak RSS: the process's resident high-water mark during ``close`` (reset just before via
  /proc/self/clear_refs), above the resident size before it; covers torch tensors too;
* traced peak: tracemalloc's peak during a second, traced close of an identical round
  (Python and numpy allocations only).

Torch runs with one intra-op thread, as ``fedmedclip aggregator serve`` sets it
(``--torch-threads 0`` keeps torch's default to compare).

Usage: python bench/aggregate.py [--sizes 10 100 1000] [--quantization int4]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

DISTINCT_PAYLOADS = 8
"""Encoded once and reused; every update is still decoded and checked separately."""


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _settle_memory() -> None:
    """Collect garbage and hand free heap back to the OS, so the RSS baseline is honest."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _setup(db, quantization: str) -> list[bytes]:
    """Set a ViT-B-32 task (version 0) and encode a few distinct updates against it."""
    import torch

    from fedmedclip.codec import encode_update
    from fedmedclip.schemas import TaskSpec
    from services.aggregator import tasks

    task = TaskSpec(class_names=[f"class{i}" for i in range(8)], backbone="ViT-B-32")
    with db.write() as session:
        tasks.set_task(session, task, "bench")
    shapes = tasks.update_shapes(task)
    generator = torch.Generator().manual_seed(0)
    return [
        encode_update(
            {k: torch.randn(s, generator=generator) * 0.01 for k, s in shapes.items()},
            base_version=0,
            quantization=quantization,
        )
        for _ in range(DISTINCT_PAYLOADS)
    ]


def _filled_round(db, n: int, payloads: list[bytes], seed: int) -> int:
    """Open a round on version 0 and store ``n`` updates from ``n`` nodes in it."""
    from fedmedclip.codec import payload_sha256
    from fedmedclip.schemas import RoundCreate
    from services.aggregator import rounds
    from services.aggregator.auth import hash_token
    from services.aggregator.db.models import Node, Update
    from services.aggregator.settings import AggregatorSettings

    rng = random.Random(seed)
    with db.write() as session:
        request = RoundCreate(min_clients=n, base_version=0)
        info = rounds.open_round(
            session,
            request,
            default_deadline_seconds=3600,
            max_upload_bytes=AggregatorSettings().max_upload_bytes,
            actor="bench",
        )
        for i in range(n):
            node = Node(name=f"r{info.id}-site{i:04d}", token_hash=hash_token(f"{info.id}-{i}"))
            session.add(node)
            session.flush()
            payload = payloads[i % len(payloads)]
            session.add(
                Update(
                    round_id=info.id,
                    node_id=node.id,
                    idempotency_key=f"k{i}",
                    sha256=payload_sha256(payload),
                    sample_count=rng.randint(1, 100),
                    local_metrics={"acc": rng.random()},
                    size_bytes=len(payload),
                    payload=payload,
                )
            )
    return info.id


def child(n: int, quantization: str, torch_threads: int) -> dict:
    """Fill a fresh database and measure ``close`` on it (runs in a subprocess)."""
    import torch

    from fedmedclip.schemas import RoundState
    from services.aggregator.closing import CLOSED_BY_ADMIN, RoundCloser
    from services.aggregator.db.migrate import upgrade
    from services.common.db import Database

    if torch_threads:
        torch.set_num_threads(torch_threads)
    with tempfile.TemporaryDirectory() as folder:
        db = Database.connect(f"sqlite:///{folder}/bench.db")
        upgrade(db.engine)
        payloads = _setup(db, quantization)
        closer = RoundCloser(db)

        timed_round = _filled_round(db, n, payloads, seed=1)
        _settle_memory()
        rss_before = _rss_kib("VmRSS")
        _reset_peak_rss()
        started = time.perf_counter()
        state = closer.close(timed_round, actor="bench", cause=CLOSED_BY_ADMIN)
        seconds = time.perf_counter() - started
        rss_peak = _rss_kib("VmHWM")
        assert state is RoundState.published, state

        traced_round = _filled_round(db, n, payloads, seed=2)
        _settle_memory()
        tracemalloc.start()
        state = closer.close(traced_round, actor="bench", cause=CLOSED_BY_ADMIN)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert state is RoundState.published, state
        db.dispose()
    return {
        "updates": n,
        "seconds": seconds,
        "payload_bytes": len(payloads[0]),
        "rss_peak_mib": max(rss_peak - rss_before, 0) / 1024,
        "traced_peak_mib": traced_peak / 2**20,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--quantization", choices=["int8", "int4"], default="int4")
    parser.add_argument("--torch-threads", type=int, default=1, help="0: torch's default")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.quantization, args.torch_threads)))
        return
    root = Path(__file__).resolve().parents[1]
    results = []
    for n in args.sizes:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(n),
                "--quantization",
                args.quantization,
                "--torch-threads",
                str(args.torch_threads),
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=root,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"aggregation through RoundCloser.close on SQLite; D=512 FAM, {args.quantization} "
        f"updates of {results[0]['payload_bytes'] / 1024:.0f} KiB; {os.cpu_count()} CPUs, "
        f"torch threads {results[0]['torch_threads']}"
    )
    print(
        f"{'updates':>8} {'seconds':>9} {'ms/update':>10} {'peak RSS MiB':>13} {'traced MiB':>11}"
    )
    for r in results:
        print(
            f"{r['updates']:>8} {r['seconds']:>9.3f} {1000 * r['seconds'] / r['updates']:>10.2f}"
            f" {r['rss_peak_mib']:>13.1f} {r['traced_peak_mib']:>11.1f}"
        )
    first, last = results[0], results[-1]
    per_update = (last["seconds"] / last["updates"]) / (first["seconds"] / first["updates"])
    print(f"time per update, {last['updates']} vs {first['updates']}: {per_update:.2f}x")
    print(
        f"updates aggregated per second at {last['updates']}: "
        f"{last['updates'] / last['seconds']:.0f}"
    )
    print(
        f"peak RSS, {last['updates']} vs {first['updates']}: "
        f"{last['rss_peak_mib'] / max(first['rss_peak_mib'], 1e-9):.2f}x; traced peak: "
        f"{last['traced_peak_mib'] / max(first['traced_peak_mib'], 1e-9):.2f}x"
    )


if __name__ == "__main__":
    main()
