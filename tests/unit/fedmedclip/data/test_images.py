"""Decoding of untrusted PNG, JPEG and DICOM bytes."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (
    MPEG2MPML,
    UID,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from fedmedclip.data.images import (
    ImageDecodeError,
    decode_image,
    load_image_file,
    read_image_bytes,
)


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _noise_image(size: int = 64) -> Image.Image:
    """Incompressible content, so that cutting the file really cuts pixel data."""
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose (valid, checksummed) header claims width x height, with no pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _dicom_bytes(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    transfer_syntax: UID = ExplicitVRLittleEndian,
    **elements: object,
) -> bytes:
    """A minimal single-frame 16-bit greyscale DICOM Part 10 file built in memory."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    raw = pixels.astype("<u2").tobytes()
    ds.PixelData = encapsulate([raw]) if transfer_syntax.is_compressed else raw
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _gray(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image)
    assert image.mode == "RGB"
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    return pixels[..., 0].astype(int)


def _testdata(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom test file {name} is missing"
    return Path(path).read_bytes()


# --- PNG and JPEG ---------------------------------------------------------------------


def test_png_round_trips_exactly() -> None:
    source = _noise_image(32)
    decoded = decode_image(_encode(source, "PNG"))
    assert decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), np.asarray(source))


def test_jpeg_decodes_to_rgb_of_the_right_size() -> None:
    source = Image.new("RGB", (40, 24), (200, 30, 60))
    decoded = decode_image(_encode(source, "JPEG", quality=95))
    assert decoded.mode == "RGB"
    assert decoded.size == (40, 24)
    assert np.abs(np.asarray(decoded, dtype=int) - (200, 30, 60)).max() <= 6


def test_grey_and_alpha_pngs_become_rgb() -> None:
    grey = decode_image(_encode(Image.new("L", (8, 8), 77), "PNG"))
    assert np.array_equal(np.asarray(grey), np.full((8, 8, 3), 77, dtype=np.uint8))
    rgba = decode_image(_encode(Image.new("RGBA", (8, 8), (10, 20, 30, 128)), "PNG"))
    assert rgba.mode == "RGB"


def test_sixteen_bit_png_is_stretched_not_clipped() -> None:
    # A 12-bit X-ray stored in a 16-bit PNG: a plain convert("RGB") would clip most of
    # it to white.
    ramp = np.linspace(0, 4095, 64, dtype=np.uint16).reshape(8, 8)
    gray = _gray(decode_image(_encode(Image.fromarray(ramp), "PNG")))
    assert gray.min() == 0 and gray.max() == 255
    assert 100 < gray.flat[32] < 156  # the middle of the ramp stays mid-grey


def test_jpeg_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = _encode(Image.new("RGB", (40, 20), "white"), "JPEG", exif=exif)
    assert decode_image(data).size == (20, 40)


def test_load_image_file_reads_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(_encode(_noise_image(16), "PNG"))
    assert load_image_file(path).size == (16, 16)
    with pytest.raises(FileNotFoundError):
        load_image_file(tmp_path / "missing.png")


# --- rejected input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"hello, this is not an image" * 10, "not a PNG, JPEG or DICOM image"),
        (b"GIF89a" + b"\x00" * 200, "not a PNG, JPEG or DICOM image"),
    ],
)
def test_non_images_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_rejected(fmt: str) -> None:
    data = _encode(_noise_image(64), fmt)
    with pytest.raises(ImageDecodeError, match="truncated or corrupt image"):
        decode_image(data[: len(data) // 2])


def test_magic_bytes_followed_by_garbage_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="truncated or corrupt image"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)


def test_header_claiming_more_pixels_than_the_cap_is_rejected_before_decoding() -> None:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(_png_header_only(10_000, 6_000))
    assert str(caught.value) == (
        "image has 60000000 pixels (10000 x 6000), more than the cap of 50000000"
    )


def test_pillow_decompression_bomb_is_an_image_decode_error() -> None:
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(_png_header_only(100_000, 100_000), max_pixels=10**12)


def test_real_image_over_a_small_cap_is_rejected() -> None:
    data = _encode(_noise_image(64), "PNG")
    with pytest.raises(ImageDecodeError, match="4096 pixels .* cap of 1000"):
        decode_image(data, max_pixels=1000)
    assert decode_image(data, max_pixels=4096).size == (64, 64)


# --- DICOM -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "size"), [("CT_small.dcm", 128), ("MR_small.dcm", 64)])
def test_bundled_dicom_decodes_to_full_range_grey_rgb(name: str, size: int) -> None:
    gray = _gray(decode_image(_testdata(name)))
    assert gray.shape == (size, size)
    assert gray.min() == 0 and gray.max() == 255


def test_ct_rescale_keeps_the_stored_pixel_order() -> None:
    # CT_small has a rescale but no window: the output must be a monotone map of the
    # stored values, i.e. perfectly rank-correlated with them.
    raw = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array.astype(float)
    gray = _gray(decode_image(_testdata("CT_small.dcm")))
    assert np.corrcoef(raw.ravel(), gray.ravel())[0, 1] > 0.999


@pytest.mark.parametrize("variant", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_losslessly_compressed_dicom_matches_the_uncompressed_file(variant: str) -> None:
    reference = np.asarray(decode_image(_testdata("MR_small.dcm")))
    syntax = pydicom.dcmread(get_testdata_file(variant)).file_meta.TransferSyntaxUID
    if get_decoder(syntax).is_available:
        assert np.array_equal(np.asarray(decode_image(_testdata(variant))), reference)
    else:
        with pytest.raises(ImageDecodeError, match=f"transfer syntax {syntax}"):
            decode_image(_testdata(variant))


def test_dicom_without_an_installed_decoder_names_the_transfer_syntax() -> None:
    data = _testdata("MR_small_jpeg_ls_lossless.dcm")
    if get_decoder(UID("1.2.840.10008.1.2.4.80")).is_available:
        assert decode_image(data).size == (64, 64)
    else:
        with pytest.raises(
            ImageDecodeError,
            match=r"DICOM transfer syntax 1\.2\.840\.10008\.1\.2\.4\.80 \(JPEG-LS .*not supported",
        ):
            decode_image(data)


def test_dicom_with_a_syntax_pydicom_cannot_decode_at_all_is_rejected() -> None:
    data = _dicom_bytes(np.zeros((4, 4)), transfer_syntax=MPEG2MPML)
    with pytest.raises(ImageDecodeError, match=r"1\.2\.840\.10008\.1\.2\.4\.100 .*not supported"):
        decode_image(data)


def test_rgb_dicom_passes_through() -> None:
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_small_odd.dcm"))
    decoded = decode_image(_testdata("SC_rgb_small_odd.dcm"))
    assert np.array_equal(np.asarray(decoded), ds.pixel_array)


def test_multi_frame_dicom_takes_the_middle_frame() -> None:
    frames = pydicom.dcmread(get_testdata_file("SC_rgb_rle_2frame.dcm")).pixel_array
    decoded = np.asarray(decode_image(_testdata("SC_rgb_rle_2frame.dcm")))
    assert np.array_equal(decoded, frames[1])
    assert not np.array_equal(decoded, frames[0])


def test_monochrome1_is_inverted() -> None:
    ramp = np.arange(16).reshape(4, 4) * 60
    mono2 = _gray(decode_image(_dicom_bytes(ramp, photometric="MONOCHROME2")))
    mono1 = _gray(decode_image(_dicom_bytes(ramp, photometric="MONOCHROME1")))
    assert mono2[0, 0] == 0 and mono2[3, 3] == 255
    assert np.array_equal(mono1, 255 - mono2)  # in MONOCHROME1 the highest value is black


def test_window_is_applied_after_the_rescale() -> None:
    # Stored 0..2000 with intercept -1024 is -1024..976 HU; the soft-tissue window
    # (centre 40, width 400) shows -160..240 HU only.
    stored = np.array([[0, 864, 1064, 1264], [1500, 2000, 1000, 1100]])
    gray = _gray(
        decode_image(
            _dicom_bytes(
                stored,
                RescaleSlope=1,
                RescaleIntercept=-1024,
                WindowCenter=40,
                WindowWidth=400,
            )
        )
    )
    assert gray[0, 0] == 0 and gray[0, 1] == 0  # at or below the window: black
    assert 120 <= gray[0, 2] <= 136  # the window centre (40 HU) is mid-grey
    assert gray[0, 3] == 255 and gray[1, 0] == 255 and gray[1, 1] == 255
    assert gray[1, 2] < gray[0, 2] < gray[1, 3]


def test_dicom_over_the_pixel_cap_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="16384 pixels"):
        decode_image(_testdata("CT_small.dcm"), max_pixels=10_000)


def test_dicom_without_pixel_data_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="DICOM file has no pixel data"):
        decode_image(_testdata("rtplan.dcm"))


@pytest.mark.parametrize("cut", [0.5, 0.98])
def test_truncated_dicom_is_rejected(cut: float) -> None:
    data = _testdata("CT_small.dcm")
    with pytest.raises(ImageDecodeError, match="cannot decode DICOM file"):
        decode_image(data[: int(len(data) * cut)])


def test_dicom_without_preamble_is_not_guessed_at() -> None:
    with pytest.raises(ImageDecodeError, match="not a PNG, JPEG or DICOM image"):
        decode_image(_testdata("no_meta.dcm"))


# --- bounded decoding: thin, huge and oversized inputs -----------------------------------


@pytest.mark.parametrize(("width", "height"), [(10_000, 1), (1, 50_000_000), (2100, 100)])
def test_thin_images_are_refused_from_the_header(width: int, height: int) -> None:
    with pytest.raises(ImageDecodeError, match="thinner than the 1:20 aspect ratio") as info:
        decode_image(_png_header_only(width, height))
    assert f"{width} x {height}" in str(info.value)


def test_an_image_at_the_aspect_cap_still_decodes() -> None:
    assert decode_image(_encode(Image.new("L", (400, 20), 9), "PNG")).size == (400, 20)


def test_thin_dicom_is_refused() -> None:
    with pytest.raises(ImageDecodeError, match="aspect ratio"):
        decode_image(_dicom_bytes(np.zeros((2, 300), dtype=np.uint16)))


def test_dicom_frame_bytes_are_capped_before_decoding() -> None:
    data = _dicom_bytes(np.zeros((100, 100), dtype=np.uint16), BitsAllocated=64)
    with pytest.raises(ImageDecodeError, match="bytes decoded, more than the cap of 40000"):
        decode_image(data, max_pixels=10_000)


def _smooth_rgb(width: int, height: int) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    pixels = np.stack(
        [
            127 + 120 * np.sin(xx / 97),
            127 + 120 * np.cos(yy / 61),
            (xx + yy) * 255 / (width + height),
        ],
        axis=-1,
    )
    return Image.fromarray(np.rint(pixels).astype(np.uint8))


def _sixteen_bit_ramp(width: int, height: int) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width]
    return Image.fromarray(((xx * 13 + yy * 7) % 50_000 + 1000).astype(np.uint16))


_LARGE = {
    "png-rgb": lambda: _encode(_smooth_rgb(1600, 1200), "PNG"),
    "png-rgba": lambda: _encode(_smooth_rgb(1600, 1200).convert("RGBA"), "PNG"),
    "png-palette": lambda: _encode(_smooth_rgb(1600, 1200).convert("P"), "PNG"),
    "png-16bit": lambda: _encode(_sixteen_bit_ramp(1600, 1200), "PNG"),
    "jpeg": lambda: _encode(_smooth_rgb(1600, 1200), "JPEG", quality=95),
    "dicom": lambda: _dicom_bytes(np.asarray(_sixteen_bit_ramp(1600, 1200))),
}


@pytest.mark.parametrize("kind", sorted(_LARGE))
def test_large_images_are_reduced_while_decoding_to_what_full_decoding_gives(kind: str) -> None:
    data = _LARGE[kind]()
    reduced = decode_image(data, min_side=500)
    full = decode_image(data, min_side=None)
    assert full.size == (1600, 1200)
    assert reduced.size == (800, 600) and reduced.mode == "RGB"
    expected = np.asarray(full.reduce(2), dtype=float)
    difference = np.abs(np.asarray(reduced, dtype=float) - expected)
    # Box reduction of the stored samples vs of the 8-bit result: rounding only. JPEG's DCT
    # scaling is a different (still faithful) filter.
    assert difference.mean() < (2.0 if kind == "jpeg" else 0.6), kind
    assert np.percentile(difference, 99) <= (8 if kind == "jpeg" else 2), kind


def test_images_below_twice_min_side_are_not_touched() -> None:
    data = _encode(_smooth_rgb(999, 700), "PNG")
    assert np.array_equal(
        np.asarray(decode_image(data, min_side=400)), np.asarray(decode_image(data, min_side=None))
    )


def test_an_oversized_file_is_refused_from_its_size_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    with path.open("wb") as handle:  # sparse: 3 GiB on paper, nothing on disk
        handle.truncate(3 * 1024**3)
    with pytest.raises(ImageDecodeError, match=r"3072\.0 MiB, more than the 256 MiB cap"):
        load_image_file(path)
    with pytest.raises(ImageDecodeError, match="more than the 1 MiB cap"):
        read_image_bytes(path, max_bytes=1024 * 1024)
