"""GPU path check: one local training job and one prediction, on CUDA and on the CPU.

Runs the library path the hospital node's job and the inference API use (decode, embed
through the feature cache, train FAM + head, encode the update, ensemble prediction) on
each available device and prints times side by side. Meant for a machine with a GPU;
on a CPU-only machine it times the CPU alone.

    python bench/gpu_check.py --backbone ViT-B-32 --images 256 --epochs 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from fedmedclip.backbone import load_backbone
from fedmedclip.codec import encode_update, state_delta
from fedmedclip.data.datasets import ClassIndex, read_image_folder
from fedmedclip.data.images import decode_image
from fedmedclip.data.synth import synthesize_federation
from fedmedclip.feature_cache import FeatureCache
from fedmedclip.model import AdapterConfig, adapter_state, build_adapter, build_head
from fedmedclip.prediction import predict
from fedmedclip.training import TrainConfig, train_local


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(device: str, backbone_name: str, folder: Path, epochs: int, work: Path) -> dict:
    timings: dict[str, float] = {}
    t = time.perf_counter()
    backbone = load_backbone(backbone_name, None, device=device)
    timings["load backbone"] = time.perf_counter() - t
    records = read_image_folder(folder)
    names = sorted({r.label for r in records})
    index = ClassIndex(names)
    labels = torch.tensor([index.index(r.label) for r in records])
    cache = FeatureCache(work / f"cache-{device.replace(':', '')}")
    t = time.perf_counter()
    feats = cache.encode_files(backbone, [r.path for r in records], batch_size=64)
    _sync(device)
    timings["embed images (cache fill)"] = time.perf_counter() - t
    t = time.perf_counter()
    cache.encode_files(backbone, [r.path for r in records])
    timings["embed images (cache hit)"] = time.perf_counter() - t
    config = AdapterConfig(dim=backbone.dim, n_classes=len(names))
    text = backbone.text_prototypes(names, "a picture of a {}.")
    adapter, head = build_adapter(config), build_head(config)
    base = adapter_state(adapter)
    t = time.perf_counter()
    result = train_local(
        adapter, head, feats, labels, text, TrainConfig(epochs=epochs, device=device, batch_size=64)
    )
    _sync(device)
    timings[f"train FAM + head ({epochs} epochs)"] = time.perf_counter() - t
    t = time.perf_counter()
    blob = encode_update(state_delta(result.adapter_state, base), base_version=0)
    timings["encode update"] = time.perf_counter() - t
    image_bytes = records[0].path.read_bytes()
    for _ in range(3):  # warm-up (CUDA kernels, allocator)
        predict(adapter, head, backbone.encode_images([decode_image(image_bytes)]), text)
    _sync(device)
    t = time.perf_counter()
    for _ in range(20):
        out = predict(adapter, head, backbone.encode_images([decode_image(image_bytes)]), text)
    _sync(device)
    timings["predict one image (mean of 20)"] = (time.perf_counter() - t) / 20
    print(
        f"[{device}] weights RANDOM, update {len(blob)} bytes, "
        f"prediction {out.probabilities.argmax().item()}, "
        f"first param on {next(adapter.parameters()).device}"
    )
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if torch.cuda.is_available():
        print("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synthesize_federation(
            work / "data", hospitals=1, classes=4, per_hospital=args.images, seed=0, image_size=96
        )
        results = {
            d: run(d, args.backbone, work / "data" / "hospital_0", args.epochs, work)
            for d in devices
        }
    print(f"\n{'step':38s}" + "".join(f"{d:>12s}" for d in devices) + "   cpu/cuda")
    for step in results["cpu"]:
        row = "".join(f"{results[d][step]:12.4f}" for d in devices)
        ratio = f"{results['cpu'][step] / results['cuda'][step]:9.1f}x" if "cuda" in results else ""
        print(f"{step:38s}{row}   {ratio}")


if __name__ == "__main__":
    main()
