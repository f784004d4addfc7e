"""Backbone preprocessing in bounded memory: normal images give the model exactly the input
open_clip's own preprocessing gives, large ones an input that embeds the same."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from fedmedclip.backbone import Backbone, BackboneError, load_backbone
from fedmedclip.data.images import ImageDecodeError


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=92) if fmt == "JPEG" else image.save(buffer, fmt)
    return buffer.getvalue()


def _photo(width: int, height: int) -> Image.Image:
    """Smooth colour content with some texture: what a dermoscopy picture roughly is."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    noise = np.random.default_rng(0).normal(0, 6, (height, width, 1))
    pixels = np.stack(
        [140 + 90 * np.sin(xx / 41), 120 + 80 * np.cos(yy / 29), 100 + 60 * np.sin((xx + yy) / 57)],
        axis=-1,
    )
    return Image.fromarray(np.clip(np.rint(pixels + noise), 0, 255).astype(np.uint8))


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min())


def _reference_dicom_rgb(data: bytes) -> Image.Image:
    """The pre-fix DICOM path, in float64: modality LUT, VOI LUT, min-max stretch."""
    ds = pydicom.dcmread(io.BytesIO(data))
    values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64)
    low, high = values.min(), values.max()
    gray = np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_normal_images_get_exactly_open_clips_input(backbone: Backbone, fmt: str) -> None:
    data = _encode(_photo(512, 384), fmt)
    expected = backbone.preprocess(Image.open(io.BytesIO(data)).convert("RGB"))
    assert torch.equal(backbone.prepare_bytes(data), expected)


def test_a_normal_dicom_embeds_as_before(backbone: Backbone) -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    new = backbone.prepare_bytes(data)
    old = backbone.preprocess(_reference_dicom_rgb(data))
    # float32 instead of float64 arithmetic: a sample may round to the next 8-bit value.
    assert (new - old).abs().max() <= 1 / 255 / 0.26 + 1e-6
    embeddings = backbone.encode_tensors(torch.stack([new, old]))
    assert _cosine(embeddings[0], embeddings[1]) > 0.9999


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_large_image_embeds_like_the_full_resolution_path(backbone: Backbone, fmt: str) -> None:
    data = _encode(_photo(2400, 1800), fmt)
    bounded = backbone.prepare_bytes(data)
    full = backbone.preprocess(Image.open(io.BytesIO(data)).convert("RGB"))
    assert bounded.shape == full.shape == (3, 224, 224)
    assert (bounded - full).abs().mean() < 0.01
    embeddings = backbone.encode_tensors(torch.stack([bounded, full]))
    assert _cosine(embeddings[0], embeddings[1]) > 0.9999


def test_prepare_refuses_a_thin_image_it_is_handed_directly(backbone: Backbone) -> None:
    with pytest.raises(ImageDecodeError, match="5000 x 10 pixels"):
        backbone.prepare(Image.new("RGB", (5000, 10)))
    assert backbone.prepare(Image.new("RGB", (200, 10))).shape == (3, 224, 224)


class _Planted:
    """Unpickling this object creates ``marker``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_payload_in_a_checkpoint_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / "weights.pt"
    with checkpoint.open("wb") as out:
        torch.save({"state_dict": {"proj": _Planted(marker)}}, out, pickle_module=pickle)
    with pytest.raises(BackboneError, match="could not read checkpoint"):
        load_backbone("ViT-S-32", str(checkpoint))
    assert not marker.exists()


@pytest.mark.slow
def test_a_plain_state_dict_checkpoint_loads(tmp_path: Path) -> None:
    """The same loader accepts tensors only, so the refusal above is about the payload."""
    random = load_backbone("ViT-S-32", "none")
    checkpoint = tmp_path / "weights.pt"
    torch.save(random.model.state_dict(), checkpoint)
    loaded = load_backbone("ViT-S-32", str(checkpoint))
    assert loaded.id.startswith("ViT-S-32/sha256-")
    probe = torch.rand(1, 3, 224, 224)
    assert torch.allclose(loaded.encode_tensors(probe), random.encode_tensors(probe))
