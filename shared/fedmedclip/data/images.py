"""Decode untrusted image bytes (PNG, JPEG, DICOM) into RGB PIL images.

Images reach us from hospital folders and from clinicians' uploads, so every path treats
the bytes as hostile: the format is chosen by magic bytes (never by file name or by a
client's content type), the pixel count is checked from the header before any pixel is
decoded, and every parser failure becomes an ``ImageDecodeError`` whose message a site
admin or a clinician can act on. Callers turn that error into a 4xx or a dataset problem
instead of a crash.

Memory and time stay bounded whatever the header claims: files are size-checked (stat)
before they are read, images thinner than 1:``MAX_ASPECT_RATIO`` are refused (resizing a
10000 x 1 strip to a 224-pixel short side would make a 224 x 2,240,000 image), and a large
image is reduced by an integer factor as it is decoded (JPEG DCT scaling, box reduction)
down to ``min_side``, before any float arithmetic. Greyscale rescaling works in float32 on
the reduced array, never in float64 on the full one.
"""

from __future__ import annotations

import io
import os
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
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024
"""Cap on an image file read from disk: an uncompressed 16-bit DICOM at the pixel cap is
100 MB, so 256 MiB leaves room for multi-frame objects while a mislabelled multi-GB file is
refused from its size alone."""
MAX_ASPECT_RATIO = 20
"""Longest side over shortest side. Medical images stay well inside it (panoramic dental
X-rays are about 2.5:1, stitched long-leg radiographs about 1:4); beyond it the model's
224-pixel centre crop would keep a sliver of the image anyway."""
DEFAULT_MIN_SIDE = 1024
"""Shorter side below which decoding does not reduce an image (see ``decode_image``)."""
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".dcm"})

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# A DICOM Part 10 file is a 128-byte preamble followed by "DICM". Files without it (raw
# datasets) are refused: parsing arbitrary bytes with pydicom's force=True accepts almost
# anything and fails late with confusing errors.
_DICOM_MAGIC = b"DICM"
_DICOM_MAGIC_OFFSET = 128
# Pillow modes that hold more than 8 bits per sample (16-bit PNG X-rays);
# Image.convert("RGB") would clip them to 255, so they are rescaled instead.
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_MAX_BYTES_PER_PIXEL = 4


class ImageDecodeError(ValueError):
    """The bytes are not an image we can decode safely; the message says why."""


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = DEFAULT_MIN_SIDE,
) -> Image.Image:
    """Decode PNG, JPEG or DICOM bytes into an RGB image.

    ``max_pixels`` caps width x height (one frame for DICOM) and, with the aspect-ratio
    cap, is checked from the header before the pixels are decoded, so a small file that
    claims a huge image (a decompression bomb) costs nothing.

    An image whose shorter side is at least twice ``min_side`` comes back reduced by the
    largest integer factor that keeps that side at or above ``min_side`` (box filter, or
    DCT scaling for JPEG); smaller images come back untouched. A model that resizes to
    ``min_side / 3`` or less sees no difference beyond rounding, and a 7000 x 7000 image
    never exists as floats. ``None`` keeps full resolution (and its memory cost).
    """
    if not data:
        raise ImageDecodeError("empty file")
    if data.startswith(_PNG_MAGIC):
        return _decode_raster(data, "PNG", max_pixels, min_side)
    if data.startswith(_JPEG_MAGIC):
        return _decode_raster(data, "JPEG", max_pixels, min_side)
    magic_end = _DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC)
    if data[_DICOM_MAGIC_OFFSET:magic_end] == _DICOM_MAGIC:
        return _decode_dicom(data, max_pixels, min_side)
    raise ImageDecodeError("not a PNG, JPEG or DICOM image")


def read_image_bytes(path: Path | str, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file, refused from its size before anything is read.

    The size is checked on the open file (no race with a rename) and the read stops one
    byte past the cap, so a file that grows after the check cannot slip through either.
    Raises ImageDecodeError for an oversized file, OSError for an unreadable one.
    """
    with Path(path).open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise ImageDecodeError(_too_big_message(size, max_bytes))
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageDecodeError(_too_big_message(len(data), max_bytes))
    return data


def check_file_size(path: Path | str, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
    """Refuse an oversized image file from ``stat`` alone (ImageDecodeError); cheap enough
    to run on every file of a dataset before any of them is read."""
    size = Path(path).stat().st_size
    if size > max_bytes:
        raise ImageDecodeError(_too_big_message(size, max_bytes))


def _too_big_message(size: int, max_bytes: int) -> str:
    mib = 1024 * 1024
    return (
        f"file is {size / mib:.1f} MiB, more than the {max_bytes / mib:.0f} MiB cap for one image"
    )


def load_image_file(
    path: Path | str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    min_side: int | None = DEFAULT_MIN_SIDE,
) -> Image.Image:
    """Read a file (see :func:`read_image_bytes`) and decode it with :func:`decode_image`.

    A missing or unreadable file raises ``OSError`` (an I/O problem, not a decode one).
    """
    data = read_image_bytes(path, max_bytes=max_bytes)
    return decode_image(data, max_pixels=max_pixels, min_side=min_side)


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


def _check_geometry(width: int, height: int, max_pixels: int) -> None:
    """Refuse, from the header alone, images too large or too thin to process safely."""
    width, height = int(width), int(height)
    pixels = width * height
    if pixels > max_pixels:
        raise ImageDecodeError(
            f"image has {pixels} pixels ({width} x {height}), more than the cap of {max_pixels}"
        )
    check_aspect_ratio(width, height)


def check_aspect_ratio(width: int, height: int) -> None:
    """Refuse (ImageDecodeError) an image thinner than 1:``MAX_ASPECT_RATIO``."""
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageDecodeError(
            f"image is {width} x {height} pixels, thinner than the 1:{MAX_ASPECT_RATIO} "
            "aspect ratio the model can use"
        )


def reduction_factor(width: int, height: int, min_side: int | None) -> int:
    """The largest integer factor that keeps the shorter side at or above ``min_side``."""
    if not min_side:
        return 1
    return max(1, min(width, height) // min_side)


def _decode_raster(data: bytes, fmt: str, max_pixels: int, min_side: int | None) -> Image.Image:
    # Image.open only parses the header; pixels are decoded by load(), after the checks.
    # Pillow's own DecompressionBombWarning fires above Image.MAX_IMAGE_PIXELS (about
    # 89 M), which is above our default cap, so the check below already refuses those
    # images; the warning is not turned into an error because warning filters are
    # process-global and not thread-safe. Pillow's hard DecompressionBombError is caught.
    # LOAD_TRUNCATED_IMAGES stays off, so load() raises on a truncated file.
    with _as_decode_error("truncated or corrupt image"):
        image = Image.open(io.BytesIO(data), formats=(fmt,))
        _check_geometry(image.width, image.height, max_pixels)
        factor = reduction_factor(image.width, image.height, min_side)
        if fmt == "JPEG" and factor > 1:
            # DCT scaling (1/2, 1/4, 1/8) while decoding: the full image is never built.
            image.draft(None, (image.width // factor, image.height // factor))
        image.load()
        # In place: without an orientation tag, the copying variant duplicates the image.
        ImageOps.exif_transpose(image, in_place=True)
        factor = reduction_factor(image.width, image.height, min_side)
        if image.mode in _WIDE_GRAY_MODES:
            return _wide_gray_to_rgb(image, factor)
        return _reduce_to_rgb(image, factor)


def _wide_gray_to_rgb(image: Image.Image, factor: int) -> Image.Image:
    """Stretch a 16/32-bit greyscale image to 8-bit RGB over its full range.

    The range comes from Pillow's extrema (no copy of the pixels); the box reduction runs
    in Pillow in the image's own type; only the reduced image becomes a numpy array.
    """
    low, high = image.getextrema()
    if factor > 1:
        size = (image.width // factor, image.height // factor)
        image = image.resize(size, Image.Resampling.BOX, reducing_gap=None)
    return _gray_to_rgb(_stretch_to_uint8(np.asarray(image), (float(low), float(high))))


def _reduce_to_rgb(image: Image.Image, factor: int) -> Image.Image:
    """``image`` as RGB, reduced by ``factor`` without a full-size copy where possible.

    Pillow reduces "RGBA" and "LA" through a premultiplied full-size copy, and any
    conversion to RGB costs 4 bytes a pixel; the alpha band is dropped anyway (as
    ``convert("RGB")`` does), so the colour bands are reduced one by one instead.
    """
    if factor == 1:
        return image.convert("RGB")
    if image.mode in ("L", "RGB"):
        return image.reduce(factor).convert("RGB")
    if image.mode == "LA":
        return image.getchannel("L").reduce(factor).convert("RGB")
    if image.mode == "RGBA":
        return Image.merge("RGB", [image.getchannel(band).reduce(factor) for band in "RGB"])
    return image.convert("RGB").reduce(factor)  # palette, bilevel, CMYK


def _decode_dicom(data: bytes, max_pixels: int, min_side: int | None) -> Image.Image:
    with _as_decode_error("cannot decode DICOM file"):
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
        if "PixelData" not in ds:
            raise ImageDecodeError("DICOM file has no pixel data")
        rows, columns = ds.get("Rows"), ds.get("Columns")
        if not rows or not columns:
            raise ImageDecodeError("DICOM file has no image size (Rows/Columns)")
        _check_geometry(columns, rows, max_pixels)
        _check_dicom_frame_bytes(ds, rows * columns, max_pixels)
        _require_decoder(ds)
        # Only one frame is decoded: the middle one, which for a CT/MR series stored as
        # a multi-frame object is the most representative slice.
        frame = get_nr_frames(ds, warn=False) // 2
        arr = pixel_array(ds, index=frame)
        factor = reduction_factor(columns, rows, min_side)
        return _dicom_pixels_to_rgb(arr, ds, factor)


def _check_dicom_frame_bytes(ds: Dataset, pixels: int, max_pixels: int) -> None:
    """Bound the decoded frame in bytes too: samples x bits can multiply the pixel count.

    The cap allows up to 4 bytes per pixel at the pixel cap (8-bit RGB, 16- or 32-bit
    grey), which covers real modalities; 64-bit or 16-bit colour frames at the pixel cap
    are refused before decoding.
    """
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    if samples not in (1, 3) or bits not in (1, 8, 16, 32, 64):
        raise ImageDecodeError(
            f"DICOM pixel layout ({samples} samples of {bits} bits) is not supported"
        )
    frame_bytes = pixels * samples * max(bits // 8, 1)
    if frame_bytes > _MAX_BYTES_PER_PIXEL * max_pixels:
        raise ImageDecodeError(
            f"DICOM frame would take {frame_bytes} bytes decoded, more than the cap of "
            f"{_MAX_BYTES_PER_PIXEL * max_pixels}"
        )


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


def _dicom_pixels_to_rgb(arr: np.ndarray, ds: Dataset, factor: int) -> Image.Image:
    """Map one decoded DICOM frame to display-ready 8-bit RGB, reduced by ``factor``.

    Greyscale goes through the modality LUT (rescale to e.g. Hounsfield units) and the
    VOI LUT / window the modality chose, which is what a radiologist sees; the result is
    stretched to 0..255 because models need one fixed range whatever the bit depth. The
    frame is reduced first, in its stored integer type, so that the LUTs (which pydicom
    computes in float64) run on the small array.
    """
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        values = apply_voi_lut(apply_modality_lut(_reduce_stored(arr, factor), ds), ds)
        gray = _stretch_to_uint8(values)
        if photometric == "MONOCHROME1":  # MONOCHROME1 means low values are white
            gray = 255 - gray
        return _gray_to_rgb(gray)
    if photometric == "PALETTE COLOR":
        # Palette indices cannot be averaged: keep every factor-th one instead.
        rgb = apply_color_lut(arr[::factor, ::factor], ds)
        return Image.fromarray(_scale_to_uint8(rgb, np.iinfo(rgb.dtype).max))
    if arr.ndim == 3 and arr.shape[-1] == 3:
        # RGB, and YBR_* which pydicom converts to RGB while decoding.
        full_scale = 2 ** int(ds.get("BitsStored", 8)) - 1
        return Image.fromarray(_scale_to_uint8(_reduce_stored(arr, factor), full_scale))
    raise ImageDecodeError(f"DICOM photometric interpretation {photometric!r} is not supported")


def _block_mean(arr: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor`` x ``factor`` block, in float32 (any trailing channel kept).

    The reduction casts block by block (numpy buffers the cast), so no full-size float
    copy is made. The last rows and columns that do not fill a block are dropped: at most
    ``factor - 1`` pixels of an image whose shorter side is over ``2 * factor`` pixels.
    """
    height, width = arr.shape[0] // factor, arr.shape[1] // factor
    blocks = arr[: height * factor, : width * factor].reshape(
        height, factor, width, factor, *arr.shape[2:]
    )
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def _reduce_stored(arr: np.ndarray, factor: int) -> np.ndarray:
    """``arr`` reduced by ``factor``, rounded back to its own (integer) type."""
    if factor == 1:
        return arr
    reduced = _block_mean(arr, factor)
    if np.issubdtype(arr.dtype, np.integer):
        return np.rint(reduced, out=reduced).astype(arr.dtype)
    return reduced


def _scale_to_uint8(arr: np.ndarray, full_scale: int) -> np.ndarray:
    """Scale samples whose known range is 0..full_scale to 0..255."""
    if arr.dtype == np.uint8 and full_scale == 255:
        return np.ascontiguousarray(arr)
    scaled = arr.astype(np.float32)
    scaled *= np.float32(255.0 / max(full_scale, 1))
    return np.clip(np.rint(scaled, out=scaled), 0, 255).astype(np.uint8)


def _stretch_to_uint8(
    arr: np.ndarray, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Min-max stretch to 0..255 in float32; a constant image becomes black.

    ``value_range`` is the (low, high) to stretch, the array's own finite range by default
    (given when the array is a reduced copy of a larger image whose range counts).
    """
    values = np.nan_to_num(arr.astype(np.float32))
    low, high = value_range or (float(values.min()), float(values.max()))
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    values -= np.float32(low)
    values *= np.float32(255.0 / (high - low))
    return np.clip(np.rint(values, out=values), 0, 255).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(gray).convert("RGB")
