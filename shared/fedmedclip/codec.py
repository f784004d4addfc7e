"""Update codec: a FAM delta against a named base version, quantised, compressed, checksummed.

Nothing here unpickles. The wire format is explicit and documented:

    magic  b"FMCU"                      4 bytes
    format version                     uint16, little endian
    header length H                    uint32, little endian
    header                             H bytes of UTF-8 JSON (see below)
    body                               one zstd frame, nothing after it

The header holds ``format_version``, ``base_version``, ``quantization`` (``fp16``, ``int8``
or ``int4``), the ordered ``tensors`` list (``name``, ``shape``, ``rows_kept``), the
decompressed body length ``raw_body_bytes`` and its ``body_sha256``. The decompressed body
holds the tensors in header order. A tensor entry may name its own ``quantization``, which
then replaces the update's for that tensor (the class statistics are never sent coarser
than int8, see :func:`tensor_quantization`). A matrix (2-D) is a row bitmap (numpy ``packbits``,
big-endian bit order) followed by its kept rows only: for ``fp16`` the values as float16;
for ``int8``/``int4`` one float32 scale per kept row then the codes (int8, or two 4-bit
codes per byte, ``code + 8`` in each nibble, high nibble first). Omitted rows decode to a zero
delta. Vectors are float16 (``fp16``) or float32 (``int8``/``int4``; they are tiny).

The header is parsed with limits (size, nesting depth, integer digits) and validated with
exact types, so a hostile header is a :class:`CodecError` like any other fault: that error
is the only one :func:`decode_update` lets escape.

Quantisation is symmetric per row, so the absolute error of every element is at most
``max|row| / 254`` for int8 and ``max|row| / 14`` for int4 (half a quantisation step).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
import zstandard
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedmedclip.bounded_json import JsonLimitError, loads_bounded
from fedmedclip.class_statistics import is_statistic
from fedmedclip.enums import Quantization, parse_choice

MAGIC = b"FMCU"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_DEPTH = 4
"""The header nests object > list of tensors > tensor > shape: four levels."""
MAX_TENSORS = 1024
MAX_TENSOR_DIMS = 4
MAX_NAME_CHARS = 200
_MAX_DIM = 2**31 - 1
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
_PREFIX = struct.Struct("<4sHI")
_LEVELS = {Quantization.int8: 127, Quantization.int4: 7}


class CodecError(ValueError):
    """Any fault in an encoded update; the message says what is wrong."""


def _quantization(value: object) -> Quantization:
    try:
        return parse_choice(Quantization, value, "quantization")
    except ValueError as exc:
        raise CodecError(str(exc)) from None


@dataclass(frozen=True)
class DecodedUpdate:
    """A validated update: the delta tensors and where they apply."""

    base_version: int
    quantization: Quantization
    delta: dict[str, torch.Tensor]
    sha256: str

    def norm(self) -> float:
        return update_norm(self.delta)


def update_norm(delta: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of a whole update, all tensors taken together."""
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in delta.values()))


def payload_sha256(data: bytes) -> str:
    """Hash of a whole encoded update (used for idempotency and the audit trail)."""
    return hashlib.sha256(data).hexdigest()


def _quantise_rows(rows: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    scale = np.abs(rows).max(axis=1) / levels
    safe = np.where(scale > 0, scale, 1.0)
    codes = np.clip(np.rint(rows / safe[:, None]), -levels, levels).astype(np.int8)
    return scale.astype(np.float32), codes


def _pack_int4(codes: np.ndarray) -> bytes:
    nibbles = (codes.reshape(-1).astype(np.int16) + 8).astype(np.uint8)
    if len(nibbles) % 2:
        nibbles = np.append(nibbles, np.uint8(8))
    return ((nibbles[0::2] << 4) | nibbles[1::2]).astype(np.uint8).tobytes()


def _unpack_int4(buf: bytes, count: int) -> np.ndarray:
    packed = np.frombuffer(buf, dtype=np.uint8)
    nibbles = np.empty(len(packed) * 2, dtype=np.int16)
    nibbles[0::2] = packed >> 4
    nibbles[1::2] = packed & 0x0F
    return (nibbles[:count] - 8).astype(np.float32)


STATISTICS_QUANTIZATION = Quantization.int8
"""The coarsest encoding of the class statistics (``fedmedclip.class_statistics``): at int4
their discriminant fell from 0.65 to 0.1-0.4 test accuracy on the benchmark, at int8 it
kept 0.60-0.65, as at fp16 and float32."""


def tensor_quantization(name: str, quantization: Quantization) -> Quantization:
    """How tensor ``name`` is encoded in an update of ``quantization``: as asked, except
    that the class statistics are never coarser than :data:`STATISTICS_QUANTIZATION`."""
    if is_statistic(name) and quantization == Quantization.int4:
        return STATISTICS_QUANTIZATION
    return quantization


def encode_update(
    delta: Mapping[str, torch.Tensor],
    *,
    base_version: int,
    quantization: Quantization | str = Quantization.int4,
    omit_rows: Mapping[str, torch.Tensor] | None = None,
    level: int = 19,
) -> bytes:
    """Encode ``delta`` (new minus base state).

    ``omit_rows[name]`` marks the rows of matrix ``name`` to leave out.
    """
    quantization = _quantization(quantization)
    omit_rows = omit_rows or {}
    body = io.BytesIO()
    tensors = []
    for name, tensor in delta.items():
        values = tensor.detach().to("cpu", torch.float32).numpy()
        entry: dict = {"name": name, "shape": list(values.shape), "rows_kept": None}
        precision = tensor_quantization(name, quantization)
        if precision != quantization:
            entry["quantization"] = precision
        if values.ndim == 2:
            keep = np.ones(values.shape[0], dtype=bool)
            if name in omit_rows:
                keep = ~omit_rows[name].detach().cpu().numpy().astype(bool)
            entry["rows_kept"] = int(keep.sum())
            body.write(np.packbits(keep).tobytes())
            rows = values[keep]
            if precision == Quantization.fp16:
                body.write(rows.astype(np.float16).tobytes())
            else:
                scale, codes = _quantise_rows(rows, _LEVELS[precision])
                body.write(scale.tobytes())
                body.write(codes.tobytes() if precision == Quantization.int8 else _pack_int4(codes))
        else:
            dtype = np.float16 if precision == Quantization.fp16 else np.float32
            body.write(values.astype(dtype).tobytes())
        tensors.append(entry)
    raw = body.getvalue()
    header = {
        "format_version": FORMAT_VERSION,
        "base_version": int(base_version),
        "quantization": quantization,
        "tensors": tensors,
        "raw_body_bytes": len(raw),
        "body_sha256": hashlib.sha256(raw).hexdigest(),
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    compressed = zstandard.ZstdCompressor(level=level).compress(raw)
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)) + header_bytes + compressed


class _TensorEntry(BaseModel):
    """One tensor of the header; strict, so ``384.0`` or ``true`` is not taken for ``384``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    shape: list[Annotated[int, Field(ge=0, le=_MAX_DIM)]] = Field(max_length=MAX_TENSOR_DIMS)
    rows_kept: Annotated[int, Field(ge=0, le=_MAX_DIM)] | None
    quantization: Literal["fp16", "int8", "int4"] | None = None


class _Header(BaseModel):
    """The header as :func:`encode_update` writes it, and nothing else."""

    model_config = ConfigDict(strict=True, extra="forbid")

    format_version: Literal[1]
    base_version: Annotated[int, Field(ge=0, le=_MAX_DIM)]
    quantization: Literal["fp16", "int8", "int4"]
    tensors: list[_TensorEntry] = Field(max_length=MAX_TENSORS)
    raw_body_bytes: Annotated[int, Field(ge=0)]
    body_sha256: str = Field(pattern="^[0-9a-f]{64}$")


def _field_problem(error: Mapping) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "header"
    return f"{where}: {error['msg']}"


def read_header(data: bytes) -> dict:
    """Parse and strictly validate the header without touching the body.

    The JSON is parsed with limits (size, nesting, integer length) and must match the
    header :func:`encode_update` writes field for field, with exact types.
    """
    if len(data) < _PREFIX.size:
        raise CodecError(f"update is truncated: {len(data)} bytes is shorter than the prefix")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise CodecError("not a FedMedCLIP update (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise CodecError(f"unsupported update format version {version}; expected {FORMAT_VERSION}")
    if header_len > MAX_HEADER_BYTES or _PREFIX.size + header_len > len(data):
        raise CodecError("update is truncated or its header length is invalid")
    raw = data[_PREFIX.size : _PREFIX.size + header_len]
    try:
        parsed = loads_bounded(raw, max_bytes=MAX_HEADER_BYTES, max_depth=MAX_HEADER_DEPTH)
    except JsonLimitError as exc:
        raise CodecError(f"update header: {exc}") from exc
    try:
        header = _Header.model_validate(parsed)
    except ValidationError as exc:
        problems = "; ".join(_field_problem(e) for e in exc.errors()[:5])
        raise CodecError(f"update header is invalid: {problems}") from exc
    fields = header.model_dump(exclude_unset=True)  # as written: no per-tensor None
    fields["quantization"] = _quantization(fields["quantization"])
    return fields | {"_body_offset": _PREFIX.size + header_len}


def _tensor_body_size(
    shape: tuple[int, ...], rows_kept: int | None, quantization: Quantization
) -> int:
    if len(shape) == 2:
        rows, cols = shape
        bitmap = (rows + 7) // 8
        if quantization == Quantization.fp16:
            return bitmap + rows_kept * cols * 2
        codes = (
            rows_kept * cols if quantization == Quantization.int8 else (rows_kept * cols + 1) // 2
        )
        return bitmap + rows_kept * 4 + codes
    count = math.prod(shape)
    return count * (2 if quantization == Quantization.fp16 else 4)


def decode_update(
    data: bytes,
    *,
    expected_shapes: Mapping[str, tuple[int, ...]],
    base_version: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_norm: float | None = None,
) -> DecodedUpdate:
    """Validate and decode an update; raise :class:`CodecError` on any fault.

    Checks, in order: size cap, prefix and header, base version, tensor names and shapes
    against ``expected_shapes``, decompressed size (bounded, so a zstd bomb cannot exhaust
    memory), body checksum, finite values, and the optional norm bound.
    """
    if len(data) == 0:
        raise CodecError("update is empty")
    if len(data) > max_bytes:
        raise CodecError(f"update is {len(data)} bytes, more than the cap of {max_bytes}")
    header = read_header(data)
    if base_version is not None and header["base_version"] != base_version:
        raise CodecError(
            f"update is against base version {header['base_version']}, expected {base_version}"
        )
    quantization = header["quantization"]
    names = [t.get("name") if isinstance(t, dict) else None for t in header["tensors"]]
    if sorted(map(str, names)) != sorted(expected_shapes) or len(set(names)) != len(names):
        raise CodecError(
            f"update tensors {names} do not match the expected {sorted(expected_shapes)}"
        )
    expected_size = 0
    for entry in header["tensors"]:
        shape = tuple(entry.get("shape") or ())
        if shape != tuple(expected_shapes[entry["name"]]):
            raise CodecError(
                f"tensor {entry['name']!r} has shape {list(shape)}, "
                f"expected {list(expected_shapes[entry['name']])}"
            )
        kept = entry.get("rows_kept")
        if len(shape) == 2 and not (isinstance(kept, int) and 0 <= kept <= shape[0]):
            raise CodecError(f"tensor {entry['name']!r} has an invalid rows_kept {kept!r}")
        expected_size += _tensor_body_size(shape, kept, _entry_quantization(entry, quantization))
    if header["raw_body_bytes"] != expected_size:
        raise CodecError(
            f"header declares {header['raw_body_bytes']} body bytes, shapes imply {expected_size}"
        )
    raw = _decompress(data[header["_body_offset"] :], expected_size)
    if hashlib.sha256(raw).hexdigest() != header["body_sha256"]:
        raise CodecError("update body checksum (sha256) does not match the header")
    delta = _decode_body(raw, header["tensors"], quantization)
    if max_norm is not None and (norm := update_norm(delta)) > max_norm:
        raise CodecError(f"update norm {norm:.4g} exceeds the bound {max_norm:.4g}")
    return DecodedUpdate(header["base_version"], quantization, delta, payload_sha256(data))


def _decompress(frame: bytes, expected_size: int) -> bytes:
    """The one zstd frame of the body, at most ``expected_size`` bytes, nothing after it.

    A frame that declares a larger content size is refused before anything is allocated
    (so a zstd bomb cannot exhaust memory), and bytes after the frame are refused rather
    than stored unseen.
    """
    try:
        declared = zstandard.frame_content_size(frame)
        if declared < 0:  # -1: no content size in the frame header (encode_update writes one)
            raise CodecError("update body does not declare its decompressed size")
        if declared != expected_size:
            raise CodecError(
                f"update body declares {declared} decompressed bytes, expected {expected_size}"
            )
        raw = zstandard.ZstdDecompressor().decompress(
            frame, max_output_size=expected_size, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise CodecError(f"update body is corrupt: {exc}") from exc
    if len(raw) != expected_size:
        raise CodecError(f"update body decompresses to {len(raw)} bytes, expected {expected_size}")
    return raw


def _entry_quantization(entry: Mapping, quantization: Quantization) -> Quantization:
    """A tensor's own encoding when its header entry names one, else the update's."""
    own = entry.get("quantization")
    return quantization if own is None else _quantization(own)


def _decode_body(
    raw: bytes, entries: list[dict], quantization: Quantization
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        chunk = raw[pos : pos + n]
        pos += n
        return chunk

    for entry in entries:
        shape = tuple(entry["shape"])
        precision = _entry_quantization(entry, quantization)
        if len(shape) == 2:
            rows, cols = shape
            keep = np.unpackbits(np.frombuffer(take((rows + 7) // 8), np.uint8))[:rows]
            keep = keep.astype(bool)
            kept = int(entry["rows_kept"])
            if int(keep.sum()) != kept:
                raise CodecError(f"tensor {entry['name']!r}: row bitmap disagrees with rows_kept")
            if precision == Quantization.fp16:
                values = np.frombuffer(take(kept * cols * 2), np.float16).astype(np.float32)
            else:
                scale = np.frombuffer(take(kept * 4), np.float32)
                if not np.isfinite(scale).all():
                    raise CodecError(f"tensor {entry['name']!r} has non-finite scales")
                if precision == Quantization.int8:
                    codes = np.frombuffer(take(kept * cols), np.int8).astype(np.float32)
                else:
                    codes = _unpack_int4(take((kept * cols + 1) // 2), kept * cols)
                values = (codes.reshape(kept, cols) * scale[:, None]).reshape(-1)
            full = np.zeros((rows, cols), dtype=np.float32)
            full[keep] = values.reshape(kept, cols)
        else:
            count = math.prod(shape)
            dtype = np.float16 if precision == Quantization.fp16 else np.float32
            values = np.frombuffer(take(count * np.dtype(dtype).itemsize), dtype)
            full = values.astype(np.float32).reshape(shape)
        if not np.isfinite(full).all():
            raise CodecError(f"tensor {entry['name']!r} contains NaN or infinite values")
        out[entry["name"]] = torch.from_numpy(full)
    return out


def apply_delta(
    base: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``base + delta`` for every tensor (names must match)."""
    return {k: base[k].float() + delta[k].float() for k in base}


def state_delta(
    new: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``new - base`` for every tensor."""
    return {k: new[k].detach().float().cpu() - base[k].float().cpu() for k in base}
