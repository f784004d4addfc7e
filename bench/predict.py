"""Benchmark of the inference API: service overhead and micro-batching throughput.

Two ratios, each measured side by side in one run because these machines are noisy:

1. Latency of one request through the service (uvicorn in its own process, real HTTP on
   loopback, multipart upload, auth, audit) versus the bare in-process path (decode,
   preprocess, encode, adapter + head, ensemble) on the same image. The two are measured
   alternately, request by request, so both see the same background load.
   Target: service p50 within 15% of the in-process p50.
2. Throughput with 16 concurrent clients, micro-batching on (MAX_BATCH_SIZE=16) versus
   off (MAX_BATCH_SIZE=1), two servers measured in alternating bursts.
   Target: at least 1.5x (about 1.75x is the ceiling for ViT-B-32 on 2 CPU cores).

The model store holds an untrained adapter and head (weights do not change the compute);
the backbone has random weights unless ``--weights`` names a tag or checkpoint.

    python bench/predict.py                      # ViT-B-32, CPU, a few minutes
    python bench/predict.py --quick              # smaller run for a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import torch

from fedmedclip.backbone import resolve_device
from fedmedclip.data import synthesize_federation
from fedmedclip.model import build_adapter, build_head
from fedmedclip.model_store import HeadMetadata, ModelStore, encode_blob
from fedmedclip.schemas import TaskSpec
from services.inference_api.metrics import InferenceMetrics
from services.inference_api.model_loader import ModelManager
from services.inference_api.predictor import predict_bytes

TOKEN = "bench-clinician-token"
CLASSES = ["nevus", "melanoma", "keratosis", "carcinoma"]


def write_store(root: Path, backbone: str) -> None:
    """A store with global v1 and head 1 for ``backbone`` (untrained: same compute)."""
    task = TaskSpec(class_names=CLASSES, backbone=backbone)
    config = task.adapter_config()
    store = ModelStore(root)
    state = build_adapter(config).state_dict()
    meta = {"version": 1, "parent_version": None, "task": task.model_dump()}
    store.save_global_blob(1, encode_blob(state, meta))
    head = store.save_head(build_head(config).state_dict(), HeadMetadata(global_version=1))
    store.set_current(1, head)


def make_image(workdir: Path, size: int) -> bytes:
    """A synthetic lesion photograph (PNG) of ``size`` x ``size`` pixels."""
    summary = synthesize_federation(
        workdir / "images", hospitals=1, classes=2, per_hospital=4, image_size=size
    )
    return sorted(summary.hospital_dirs[0].rglob("*.png"))[0].read_bytes()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextmanager
def server(
    store: Path, workdir: Path, *, max_batch_size: int, args: argparse.Namespace
) -> Iterator[str]:
    """The inference API in its own process (as deployed); yields its base URL."""
    with httpx.Client() as probe:
        port = _free_port()
        env = {
            **os.environ,
            "FEDMEDCLIP_INFERENCE_MODEL_STORE_DIR": str(store),
            "FEDMEDCLIP_INFERENCE_CLINICIAN_TOKENS": TOKEN,
            "FEDMEDCLIP_INFERENCE_BACKBONE_WEIGHTS": args.weights,
            "FEDMEDCLIP_INFERENCE_DEVICE": args.device,
            "FEDMEDCLIP_INFERENCE_MAX_BATCH_SIZE": str(max_batch_size),
            "FEDMEDCLIP_INFERENCE_BATCH_WINDOW_MS": str(args.window_ms),
            "FEDMEDCLIP_INFERENCE_AUDIT_PATH": str(workdir / f"audit-{port}.jsonl"),
            "FEDMEDCLIP_INFERENCE_AGGREGATOR_URL": "",
        }
        log = (workdir / f"server-{port}.log").open("w")
        command = [
            sys.executable, "-m", "uvicorn", "--factory",
            "services.inference_api.app:create_app",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        ]  # fmt: skip
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 600
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited; see {log.name}")
                try:
                    if probe.get(f"{url}/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready after 600 s; see {log.name}")
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(http: httpx.Client, url: str, image: bytes) -> None:
    response = http.post(f"{url}/predict", files={"file": ("image.png", image, "image/png")})
    response.raise_for_status()


def measure_latency(url: str, model, image: bytes, pairs: int, warmup: int) -> dict:
    """Alternate one in-process prediction and one HTTP request, ``pairs`` times."""
    bare, service = [], []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(headers=headers, timeout=120) as http:
        for i in range(warmup + pairs):
            started = time.perf_counter()
            predict_bytes(model, image, max_pixels=50_000_000)
            middle = time.perf_counter()
            post(http, url, image)
            done = time.perf_counter()
            if i >= warmup:
                bare.append((middle - started) * 1000)
                service.append((done - middle) * 1000)
    return {
        "bare_p50_ms": statistics.median(bare),
        "bare_p95_ms": percentile(bare, 0.95),
        "service_p50_ms": statistics.median(service),
        "service_p95_ms": percentile(service, 0.95),
        "overhead_p50": statistics.median(service) / statistics.median(bare) - 1,
        "overhead_p95": percentile(service, 0.95) / percentile(bare, 0.95) - 1,
    }


def burst(url: str, image: bytes, clients: int, per_client: int) -> float:
    """Images per second with ``clients`` threads each sending ``per_client`` requests."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    barrier = threading.Barrier(clients + 1)
    with httpx.Client(headers=headers, timeout=300, limits=limits) as http:

        def one_client() -> None:
            barrier.wait()
            for _ in range(per_client):
                post(http, url, image)

        with ThreadPoolExecutor(clients) as pool:
            futures = [pool.submit(one_client) for _ in range(clients)]
            barrier.wait()
            started = time.perf_counter()
            for future in futures:
                future.result()
            elapsed = time.perf_counter() - started
    return clients * per_client / elapsed


def batch_counts(url: str) -> tuple[float, float]:
    """(images run, forward passes) so far, from the server's batch-size histogram."""
    samples = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("fedmedclip_inference_batch_size_sum", "fedmedclip_inference_batch_size_count"):
            samples[name] = float(value)
    return (
        samples["fedmedclip_inference_batch_size_sum"],
        samples["fedmedclip_inference_batch_size_count"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--weights", default="none", help="open_clip tag, checkpoint or none")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=60, help="latency samples per path")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--per-client", type=int, default=8, help="requests per client/burst")
    parser.add_argument("--bursts", type=int, default=3, help="alternating bursts per setting")
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.per_client, args.bursts = 15, 3, 1
    args.device = resolve_device(args.device)

    workdir = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    try:
        store = workdir / "store"
        write_store(store, args.backbone)
        image = make_image(workdir, args.image_size)
        manager = ModelManager(
            ModelStore(store), weights=args.weights, device=args.device, metrics=InferenceMetrics()
        )
        model = manager.refresh()
        if model is None:
            raise SystemExit(f"could not load the bench model: {manager.unavailable_reason}")
        print(
            f"backbone {args.backbone} weights={model.weights} device={args.device} "
            f"image {args.image_size}px PNG ({len(image)} bytes), torch threads "
            f"{torch.get_num_threads()}, cpus {os.cpu_count()}",
            flush=True,
        )
        with (
            server(store, workdir, max_batch_size=16, args=args) as batched,
            server(store, workdir, max_batch_size=1, args=args) as unbatched,
        ):
            latency = measure_latency(batched, model, image, args.pairs, warmup=5)
            burst(batched, image, args.clients, 1)  # warm both servers' thread pools
            burst(unbatched, image, args.clients, 1)
            rates: dict[str, list[float]] = {"batched": [], "unbatched": []}
            images_before, forwards_before = batch_counts(batched)
            for _ in range(args.bursts):
                rates["batched"].append(burst(batched, image, args.clients, args.per_client))
                rates["unbatched"].append(burst(unbatched, image, args.clients, args.per_client))
            images_after, forwards_after = batch_counts(batched)
            batch_mean = (images_after - images_before) / (forwards_after - forwards_before)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    batched_rate = statistics.median(rates["batched"])
    unbatched_rate = statistics.median(rates["unbatched"])
    figures = {
        **latency,
        "throughput_batched_per_s": batched_rate,
        "throughput_unbatched_per_s": unbatched_rate,
        "throughput_ratio": batched_rate / unbatched_rate,
        "mean_batch_size": batch_mean,
        "backbone": args.backbone,
        "device": args.device,
        "clients": args.clients,
    }
    rows = [
        ("in-process path p50 / p95", f"{latency['bare_p50_ms']:.1f} / "
         f"{latency['bare_p95_ms']:.1f} ms"),
        ("service (HTTP) p50 / p95", f"{latency['service_p50_ms']:.1f} / "
         f"{latency['service_p95_ms']:.1f} ms"),
        ("service overhead p50 / p95", f"{latency['overhead_p50']:+.1%} / "
         f"{latency['overhead_p95']:+.1%}   (target <= +15%)"),
        (f"throughput, {args.clients} clients, batch 1", f"{unbatched_rate:.1f} images/s"),
        (f"throughput, {args.clients} clients, batch 16", f"{batched_rate:.1f} images/s "
         f"(mean batch {batch_mean:.1f})"),
        ("micro-batching speed-up", f"{batched_rate / unbatched_rate:.2f}x   (target >= 1.5x)"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
