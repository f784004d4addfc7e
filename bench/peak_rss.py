"""Benchmark: peak memory and time of decoding + preprocessing hostile images.

Each input goes through the inference API's own per-image path
(``services.inference_api.predictor.prepare``: decode, bound, preprocess) in a fresh child
process, so one input's peak cannot hide another's. The child builds the backbone and
reads the file first, then resets the kernel's peak-RSS counter (``/proc/self/clear_refs``)
so the figure is the peak of the decode itself, not of building the model.

Inputs (written once into a temporary folder):

* ``normal``: a 512 x 512 RGB PNG, the baseline every other figure is divided by;
* ``thin-wide``: an 89-byte 10000 x 1 PNG;
* ``thin-tall``: a 1 x 50,000,000 PNG (exactly at the default pixel cap);
* ``png16-7000``: a 7000 x 7000 16-bit greyscale PNG (a gradient);
* ``dicom-7000``: a 7000 x 7000 16-bit CT-like DICOM with a rescale and a window;
* ``bomb-png``: a 7000 x 7000 RGBA PNG of zeros (a few hundred KB on disk).

Printed per input: the outcome (``ok`` or the refusal), the peak RSS of the process and
its ratio to the baseline's, the peak above the RSS before decoding, and the time.

    python bench/peak_rss.py            # about a minute on 2 CPU cores
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

MAX_PIXELS = 50_000_000  # the inference API's default FEDMEDCLIP_INFERENCE_MAX_PIXELS


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return len(payload).to_bytes(4, "big") + kind + payload + crc.to_bytes(4, "big")


def streamed_png(
    width: int, height: int, *, bit_depth: int, color_type: int, rows: Callable[[], Iterator[bytes]]
) -> bytes:
    """A PNG compressed in pieces, so a 50-megapixel image never sits in memory.

    ``rows()`` yields scanlines, each already prefixed with its filter byte (several
    scanlines may come in one piece).
    """
    header = (
        width.to_bytes(4, "big")
        + height.to_bytes(4, "big")
        + bytes([bit_depth, color_type, 0, 0, 0])
    )
    compressor = zlib.compressobj(6)
    parts: list[bytes] = []
    for row in rows():
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def _constant_rows(row: bytes, count: int) -> Callable[[], Iterator[bytes]]:
    """``count`` identical scanlines (filter type 0), 64K of them per piece."""
    line = b"\x00" + row

    def rows() -> Iterator[bytes]:
        for start in range(0, count, 65536):
            yield line * min(65536, count - start)

    return rows


def _gradient16_rows(width: int, height: int) -> Callable[[], Iterator[bytes]]:
    base = np.arange(width, dtype=np.uint32) * 7

    def rows() -> Iterator[bytes]:
        for y in range(height):
            yield b"\x00" + ((base + y * 5) % 60000).astype(">u2").tobytes()

    return rows


def normal_png() -> bytes:
    yy, xx = np.mgrid[0:512, 0:512]
    pixels = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def ct_dicom(side: int) -> bytes:
    """An uncompressed 16-bit MONOCHROME2 DICOM with a CT rescale and a soft-tissue window."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    column = np.arange(side, dtype=np.uint32)
    ds.PixelData = b"".join(
        ((column * 3 + row) % 4000).astype("<u2").tobytes() for row in range(side)
    )
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def inputs() -> dict[str, Callable[[], bytes]]:
    """Name -> builder of each input, baseline first."""
    return {
        "normal": normal_png,
        "thin-wide": lambda: streamed_png(
            10_000, 1, bit_depth=8, color_type=0, rows=_constant_rows(bytes(10_000), 1)
        ),
        "thin-tall": lambda: streamed_png(
            1, 50_000_000, bit_depth=8, color_type=0, rows=_constant_rows(b"\x00", 50_000_000)
        ),
        "png16-7000": lambda: streamed_png(
            7000, 7000, bit_depth=16, color_type=0, rows=_gradient16_rows(7000, 7000)
        ),
        "dicom-7000": lambda: ct_dicom(7000),
        "bomb-png": lambda: streamed_png(
            7000, 7000, bit_depth=8, color_type=6, rows=_constant_rows(bytes(7000 * 4), 7000)
        ),
    }


def child(paths: list[Path], backbone_name: str) -> None:
    """Measure each decode + preprocess in this process; print one JSON line per file.

    The peak counter is reset before each file, so files measured in one process do not
    add up (the benchmark still uses one process per file; the regression test batches).
    """
    from fedmedclip.backbone import load_backbone

    backbone = load_backbone(backbone_name)
    for path in paths:
        _measure(path.read_bytes(), backbone)


def _measure(data: bytes, backbone: Any) -> None:
    from services.inference_api.predictor import prepare

    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before_kb = _status_kb("VmRSS")
    started = time.perf_counter()
    try:
        pixels = prepare(data, backbone, MAX_PIXELS)
        outcome = f"ok {tuple(pixels.shape)}"
    except Exception as exc:  # the benchmark records every outcome, 500s included
        outcome = f"{type(exc).__name__}: {str(exc)[:90]}"
    seconds = time.perf_counter() - started
    peak_kb = _status_kb("VmHWM")
    print(
        json.dumps(
            {
                "outcome": outcome,
                "peak_mb": peak_kb / 1024,
                "delta_mb": (peak_kb - before_kb) / 1024,
                "seconds": seconds,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="ViT-S-32")
    parser.add_argument("--child", type=Path, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.backbone)
        return
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fedmedclip-peak-rss-") as tmp:
        for name, build in inputs().items():
            path = Path(tmp) / name
            data = build()
            path.write_bytes(data)
            command = [sys.executable, __file__, "--backbone", args.backbone, "--child", str(path)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[name] = json.loads(out.strip().splitlines()[-1]) | {"bytes": len(data)}
    base = results["normal"]
    print(f"{'input':<11} {'file':>10} {'peak MB':>8} {'x base':>7} {'+MB':>7} {'s':>6}  outcome")
    for name, r in results.items():
        ratio = r["peak_mb"] / base["peak_mb"]
        print(
            f"{name:<11} {r['bytes']:>10} {r['peak_mb']:>8.0f} {ratio:>7.2f} "
            f"{r['delta_mb']:>7.0f} {r['seconds']:>6.2f}  {r['outcome']}"
        )


if __name__ == "__main__":
    main()
