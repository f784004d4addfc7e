"""Decode untrusted image bytes (PNG, JPEG, DICOM) into RGB PIL images.

Images reach us from hospital folders and from clinicians' uploads, so every path treats
the bytes as hostile: the format is chosen by magic bytes (never by file name or by a
client's content type), the pixel count is checked from the header before any pixel is
decoded, and every parser failure becomes an ``ImageDecodeError`` whose message a site
admin or a clinician can act on. Callers turn that error into a 4xx or a dataset problem
instead of a crash.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageOps
from pydicom.dataset import Dataset
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    get_decoder,
    pixel_array,
)
from pydicom.pixels.utils import get_nr_frames
from pydicom.uid import UID

DEFAULT_MAX_PIXELS = 50_000_000
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".dcm"})

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# A DICOM Part 10 file is a 128-byte preamble followed by "DICM". Files without it (raw
# datasets) are refused: parsing arbitrary bytes with pydicom's force=True accepts almost
# anything and fails late with confusing errors.
_DICOM_MAGIC = b"DICM"
_DICOM_MAGIC_OFFSET = 128
# Pillow modes that hold more than 8 bits per sample (16-bit PNG X-rays, float images);
# Image.convert("RGB") would clip them to 255, so they are rescaled instead.
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


class ImageDecodeError(ValueError):
    """The bytes are not an image we can decode safely; the message says why."""


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode PNG, JPEG or DICOM bytes into an RGB image.

    ``max_pixels`` caps width x height (one frame for DICOM) and is checked from the
    header before the pixels are decoded, so a small file that claims a huge image
    (a decompression bomb) costs nothing.
    """
    if not data:
        raise ImageDecodeError("empty file")
    if data.startswith(_PNG_MAGIC):
        return _decode_raster(data, "PNG", max_pixels)
    if data.startswith(_JPEG_MAGIC):
        return _decode_raster(data, "JPEG", max_pixels)
    magic_end = _DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC)
    if data[_DICOM_MAGIC_OFFSET:magic_end] == _DICOM_MAGIC:
        return _decode_dicom(data, max_pixels)
    raise ImageDecodeError("not a PNG, JPEG or DICOM image")


def load_image_file(path: Path | str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read a file and decode it with :func:`decode_image`.

    A missing or unreadable file raises ``OSError`` (an I/O problem, not a decode one).
    """
    return decode_image(Path(path).read_bytes(), max_pixels=max_pixels)


@contextmanager
def _as_decode_error(what: str) -> Iterator[None]:
    """Turn any parser failure into an ImageDecodeError.

    Pillow and pydicom raise a wide, undocumented mix of exceptions on malformed input
    (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, KeyError...).
    For untrusted bytes every one of them means "this file is broken", so all are caught
    here, once, rather than letting one of them escape as a server error.
    """
    try:
        yield
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image is too large to decode safely: {exc}") from exc
    except Exception as exc:  # deliberately broad: see the docstring
        raise ImageDecodeError(f"{what}: {exc}") from exc


def _check_pixel_count(width: int, height: int, max_pixels: int) -> None:
    pixels = int(width) * int(height)
    if pixels > max_pixels:
        raise ImageDecodeError(
            f"image has {pixels} pixels ({width} x {height}), more than the cap of {max_pixels}"
        )


def _decode_raster(data: bytes, fmt: str, max_pixels: int) -> Image.Image:
    # Image.open only parses the header; pixels are decoded by load(), after the cap
    # check. Pillow's own DecompressionBombWarning fires above Image.MAX_IMAGE_PIXELS
    # (about 89 M), which is above our default cap, so the check below already refuses
    # those images; the warning is not turned into an error because warning filters are
    # process-global and not thread-safe. Pillow's hard DecompressionBombError is caught.
    # LOAD_TRUNCATED_IMAGES stays off, so load() raises on a truncated file.
    with _as_decode_error("truncated or corrupt image"):
        image = Image.open(io.BytesIO(data), formats=(fmt,))
        _check_pixel_count(image.width, image.height, max_pixels)
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in _WIDE_GRAY_MODES:
            return _gray_to_rgb(_stretch_to_uint8(np.asarray(image)))
        return image.convert("RGB")


def _decode_dicom(data: bytes, max_pixels: int) -> Image.Image:
    with _as_decode_error("cannot decode DICOM file"):
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
        if "PixelData" not in ds:
            raise ImageDecodeError("DICOM file has no pixel data")
        rows, columns = ds.get("Rows"), ds.get("Columns")
        if not rows or not columns:
            raise ImageDecodeError("DICOM file has no image size (Rows/Columns)")
        _check_pixel_count(columns, rows, max_pixels)
        _require_decoder(ds)
        # Only one frame is decoded: the middle one, which for a CT/MR series stored as
        # a multi-frame object is the most representative slice.
        frame = get_nr_frames(ds, warn=False) // 2
        return _dicom_pixels_to_rgb(pixel_array(ds, index=frame), ds)


def _require_decoder(ds: Dataset) -> None:
    """Refuse transfer syntaxes that no installed pixel-data handler can decode."""
    uid = ds.file_meta.get("TransferSyntaxUID")
    if uid is None:
        raise ImageDecodeError("DICOM file has no transfer syntax")
    uid = UID(str(uid))
    try:
        available = get_decoder(uid).is_available
    except NotImplementedError:
        available = False
    if not available:
        described = f"{uid} ({uid.name})" if uid.name != str(uid) else str(uid)
        raise ImageDecodeError(f"DICOM transfer syntax {described} is not supported")


def _dicom_pixels_to_rgb(arr: np.ndarray, ds: Dataset) -> Image.Image:
    """Map one decoded DICOM frame to display-ready 8-bit RGB.

    Greyscale goes through the modality LUT (rescale to e.g. Hounsfield units) and the
    VOI LUT / window the modality chose, which is what a radiologist sees; the result is
    stretched to 0..255 because models need one fixed range whatever the bit depth.
    """
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        values = apply_voi_lut(apply_modality_lut(arr, ds), ds)
        gray = _stretch_to_uint8(values)
        if photometric == "MONOCHROME1":  # MONOCHROME1 means low values are white
            gray = 255 - gray
        return _gray_to_rgb(gray)
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        return Image.fromarray(_scale_to_uint8(rgb, np.iinfo(rgb.dtype).max))
    if arr.ndim == 3 and arr.shape[-1] == 3:
        # RGB, and YBR_* which pydicom converts to RGB while decoding.
        full_scale = 2 ** int(ds.get("BitsStored", 8)) - 1
        return Image.fromarray(_scale_to_uint8(arr, full_scale))
    raise ImageDecodeError(f"DICOM photometric interpretation {photometric!r} is not supported")


def _scale_to_uint8(arr: np.ndarray, full_scale: int) -> np.ndarray:
    """Scale samples whose known range is 0..full_scale to 0..255."""
    if arr.dtype == np.uint8 and full_scale == 255:
        return np.ascontiguousarray(arr)
    scaled = arr.astype(np.float64) * (255.0 / max(full_scale, 1))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _stretch_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min-max stretch to 0..255; a constant image becomes black rather than NaN."""
    values = np.nan_to_num(arr.astype(np.float64))
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(gray).convert("RGB")
