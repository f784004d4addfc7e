"""Servers, clients and test images for the inference API integration tests."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML

from services.inference_api.app import create_app
from services.inference_api.settings import InferenceSettings
from tests.support.processes import ThreadedServer, http_ok, wait_until

CLINICIAN = "clinician-token-for-tests"
ADMIN = "admin-token-for-tests"


def make_settings(store_root: Path, workdir: Path, **overrides: Any) -> InferenceSettings:
    """Settings for a test server: tokens above, audit log in ``workdir``, quick reloads."""
    values: dict[str, Any] = {
        "model_store_dir": store_root,
        "clinician_tokens": [CLINICIAN],
        "admin_token": ADMIN,
        "audit_path": workdir / "audit" / "audit.jsonl",
        "reload_seconds": 0.2,
        "device": "cpu",
        "aggregator_url": "",
    }
    values.update(overrides)
    return InferenceSettings(**values)


@contextmanager
def serve(settings: InferenceSettings, *, ready: bool = True) -> Iterator[ThreadedServer]:
    """The app under uvicorn on a loopback port; by default wait until a model is loaded."""
    with ThreadedServer(create_app(settings)) as server:
        if ready:
            wait_until(lambda: http_ok(f"{server.url}/ready"), timeout=120, what="model loaded")
        yield server


def client(server: ThreadedServer, token: str | None = CLINICIAN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=120)


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text ``text`` (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, rest = key.partition("{")
        found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if metric == name and found == wanted:
            return float(value)
    return 0.0


# --- images -------------------------------------------------------------------------------


def jpeg_from(png: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


def ct_small_dicom() -> bytes:
    """pydicom's bundled CT slice (MONOCHROME2, 16-bit, with rescale slope/intercept)."""
    return Path(get_testdata_file("CT_small.dcm")).read_bytes()


def unsupported_transfer_syntax_dicom() -> bytes:
    """CT_small re-labelled as MPEG-2 video, a transfer syntax no pixel handler decodes."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PixelData = encapsulate([ds.PixelData])
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=True)
    return out.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header announcing ``width x height`` grey pixels, in under 100 bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + data + _png_chunk(b"IEND", b"")
