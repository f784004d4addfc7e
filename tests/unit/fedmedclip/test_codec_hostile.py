"""Hostile payloads: whatever the bytes, ``decode_update`` raises ``CodecError`` or succeeds."""

from __future__ import annotations

import json
import struct

import pytest
import torch
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedmedclip.codec import MAGIC, CodecError, decode_update, encode_update, read_header

SHAPES = {"w": (6, 4), "b": (4,)}
_PREFIX = struct.Struct("<4sHI")


def _delta(scale: float = 0.1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=generator) * scale for k, s in SHAPES.items()}


VALID = {q: encode_update(_delta(), base_version=3, quantization=q) for q in ("fp16", "int8")}


def _with_header(header: bytes | str, body: bytes | None = None) -> bytes:
    """A payload whose header is ``header`` verbatim, followed by a valid update's body."""
    raw = header.encode() if isinstance(header, str) else header
    valid = VALID["int8"]
    offset = read_header(valid)["_body_offset"]
    return _PREFIX.pack(MAGIC, 1, len(raw)) + raw + (valid[offset:] if body is None else body)


def _header_of(payload: bytes) -> dict:
    header = read_header(payload)
    del header["_body_offset"]
    return header


def _decode(payload: bytes):
    return decode_update(payload, expected_shapes=SHAPES, base_version=3)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("[" * 60_000, "nests 60000 levels"),  # unclosed: the whole header fits in 64 KiB
        ('{"base_version": ' + "9" * 5000 + "}", "more than 20 digits"),
        ('{"a": "' + "x" * 70_000 + '"}', "header length is invalid"),
        (b'{"a": "\xff"}', "not UTF-8"),
        ("{", "not valid JSON"),
    ],
    ids=["deep", "long-integer", "oversized", "not-utf8", "not-json"],
)
def test_headers_beyond_the_parser_limits_are_codec_errors(header, message) -> None:
    with pytest.raises(CodecError, match=message):
        _decode(_with_header(header))


def test_float_and_boolean_shape_entries_are_refused() -> None:
    header = _header_of(VALID["int8"])
    header["tensors"][0]["shape"] = [6.0, 4.0]
    with pytest.raises(CodecError, match=r"tensors\.0\.shape\.0: Input should be a valid integer"):
        _decode(_with_header(json.dumps(header)))
    header["tensors"][0]["shape"] = [True, 4]
    with pytest.raises(CodecError, match="valid integer"):
        _decode(_with_header(json.dumps(header)))


def test_a_tensor_encoding_the_body_does_not_hold_is_refused_before_decoding() -> None:
    """A tensor may name its own encoding (the class statistics do); naming one its body
    was not written in changes the size the shapes imply, which is checked first."""
    header = _header_of(VALID["int8"])
    header["tensors"][0]["quantization"] = "int4"
    with pytest.raises(CodecError, match="shapes imply"):
        _decode(_with_header(json.dumps(header)))
    header["tensors"][0]["quantization"] = "int2"
    with pytest.raises(CodecError, match="quantization"):
        _decode(_with_header(json.dumps(header)))


def test_unknown_header_fields_are_refused() -> None:
    header = _header_of(VALID["int8"]) | {"note": "hello"}
    with pytest.raises(CodecError, match="note: Extra inputs are not permitted"):
        _decode(_with_header(json.dumps(header)))


@pytest.mark.parametrize(
    "trailer", [b"\0", b"hidden data", VALID["fp16"][-40:]], ids=["nul", "text", "frame-tail"]
)
def test_bytes_after_the_zstd_frame_are_refused(trailer: bytes) -> None:
    assert _decode(VALID["int8"]).base_version == 3
    with pytest.raises(CodecError, match="unused data"):
        _decode(VALID["int8"] + trailer)


def test_a_frame_declaring_a_larger_body_is_refused_before_decompressing() -> None:
    header = _header_of(VALID["int8"])
    bomb = zstandard.ZstdCompressor().compress(b"\0" * 10_000_000)
    with pytest.raises(CodecError, match="declares 10000000 decompressed bytes"):
        _decode(_with_header(json.dumps(header), bomb))


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None, extra: bytes) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    if cut is not None:
        out = out[: cut % (len(out) + 1)]
    return bytes(out) + extra


HOSTILE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
@HOSTILE
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_codec_errors(data: bytes) -> None:
    with pytest.raises(CodecError):
        _decode(data)


@pytest.mark.slow
@HOSTILE
@given(
    quantization=st.sampled_from(sorted(VALID)),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.none() | st.integers(0, 10**6),
    extra=st.binary(max_size=16),
)
def test_mutated_payloads_raise_only_codec_errors(quantization, edits, cut, extra) -> None:
    payload = _mutate(VALID[quantization], edits, cut, extra)
    try:
        decoded = _decode(payload)
    except CodecError:
        return
    assert all(torch.isfinite(t).all() for t in decoded.delta.values())


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@pytest.mark.slow
@HOSTILE
@given(
    field=st.sampled_from(
        ["base_version", "quantization", "tensors", "raw_body_bytes", "body_sha256", "x"]
    ),
    value=JSON_VALUES,
    tensor_field=st.sampled_from(["name", "shape", "rows_kept", "quantization", "y"]),
    tensor_value=JSON_VALUES,
)
def test_mutated_headers_raise_only_codec_errors(field, value, tensor_field, tensor_value) -> None:
    header = _header_of(VALID["int8"])
    header[field] = value
    tensors = header.get("tensors")
    if isinstance(tensors, list) and tensors and isinstance(tensors[0], dict):
        tensors[0][tensor_field] = tensor_value
    try:
        _decode(_with_header(json.dumps(header, allow_nan=True)))
    except CodecError:
        return
