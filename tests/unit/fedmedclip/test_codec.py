"""Update codec: round trips within stated bounds; every kind of bad payload is rejected."""

import struct
import tracemalloc

import pytest
import torch
import zstandard

from fedmedclip.codec import CodecError, decode_update, encode_update
from fedmedclip.model import AdapterConfig, adapter_state, build_adapter, expected_shapes

CONFIG = AdapterConfig(dim=64, n_classes=3, learn_prototypes=True)
SHAPES = expected_shapes(CONFIG)


def _delta(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * 0.01 for k, v in SHAPES_T.items()}


SHAPES_T = adapter_state(build_adapter(CONFIG))


@pytest.mark.parametrize(("quantization", "levels"), [("int8", 127), ("int4", 7)])
def test_round_trip_within_half_a_step_per_row(quantization, levels):
    delta = _delta()
    blob = encode_update(delta, base_version=5, quantization=quantization)
    out = decode_update(blob, expected_shapes=SHAPES, base_version=5)
    assert out.base_version == 5
    for name, tensor in delta.items():
        err = (out.delta[name] - tensor).abs()
        if tensor.ndim == 2:
            bound = tensor.abs().amax(dim=1, keepdim=True) / (2 * levels) + 1e-7
            assert torch.all(err <= bound), name
        else:
            assert torch.all(err == 0), name


def test_fp16_round_trip_and_size_ordering():
    delta = _delta()
    sizes = {}
    for q in ("fp16", "int8", "int4"):
        blob = encode_update(delta, base_version=0, quantization=q)
        sizes[q] = len(blob)
        out = decode_update(blob, expected_shapes=SHAPES, base_version=0)
        assert max((out.delta[k] - delta[k]).abs().max() for k in delta) < 5e-3
    assert sizes["int4"] < sizes["int8"] < sizes["fp16"]


def test_omitted_rows_decode_as_zero_and_shrink_the_payload():
    delta = _delta()
    omit = {"fam.l1.weight": torch.zeros(64, dtype=torch.bool)}
    omit["fam.l1.weight"][:32] = True
    full = encode_update(delta, base_version=0, quantization="int8")
    partial = encode_update(delta, base_version=0, quantization="int8", omit_rows=omit)
    assert len(partial) < len(full)
    out = decode_update(partial, expected_shapes=SHAPES, base_version=0)
    assert torch.all(out.delta["fam.l1.weight"][:32] == 0)
    assert torch.allclose(out.delta["fam.l1.weight"][32:], delta["fam.l1.weight"][32:], atol=1e-3)


def _reject(blob: bytes, match: str, **kwargs) -> None:
    with pytest.raises(CodecError, match=match):
        decode_update(blob, expected_shapes=kwargs.pop("shapes", SHAPES), **kwargs)


def test_rejects_corrupt_truncated_oversized_wrong_shape_wrong_base_and_nan():
    blob = encode_update(_delta(), base_version=2, quantization="int8")
    _reject(b"", "empty")
    _reject(b"XXXX" + blob[4:], "magic")
    _reject(blob[:10], "truncated")
    _reject(blob[: len(blob) // 2], "corrupt|decompresses")
    corrupted = bytearray(blob)
    corrupted[-20] ^= 0xFF
    _reject(bytes(corrupted), "corrupt|checksum|decompresses")
    _reject(blob, "cap", max_bytes=100)
    _reject(blob, "base version 2, expected 3", base_version=3)
    wrong = dict(SHAPES)
    wrong["fam.l1.weight"] = (64, 65)
    _reject(blob, "shape", shapes=wrong)
    missing = {k: v for k, v in SHAPES.items() if k != "prototype_offset"}
    _reject(blob, "do not match", shapes=missing)
    nan = _delta()
    nan["fam.l1.bias"][3] = float("nan")
    _reject(encode_update(nan, base_version=0, quantization="int8"), "NaN")
    inf = _delta()
    inf["fam.l2.weight"][0, 0] = float("inf")
    _reject(encode_update(inf, base_version=0, quantization="fp16"), "NaN|non-finite")
    _reject(blob, "norm", max_norm=1e-6)


def test_rejects_a_header_that_lies_about_the_body():
    blob = encode_update(_delta(), base_version=0, quantization="int8")
    magic, version, hlen = struct.unpack_from("<4sHI", blob)
    header = blob[10 : 10 + hlen].replace(b'"raw_body_bytes":', b'"raw_body_bytes":1')
    forged = struct.pack("<4sHI", magic, version, len(header)) + header + blob[10 + hlen :]
    _reject(forged, "body bytes")


def test_a_zstd_bomb_is_refused_without_inflating_it():
    """A body that inflates to 256 MB: refused, and decoding never holds more than the
    expected body size (the read is bounded, not "read all and then compare")."""
    blob = encode_update(_delta(), base_version=0, quantization="int8")
    _, _, hlen = struct.unpack_from("<4sHI", blob)
    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(256 * 1024 * 1024))
    hidden = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(bytes(1 << 20))
    assert len(bomb) < 100_000  # small on the wire, well under the size cap
    forged = blob[: 10 + hlen] + bomb
    tracemalloc.start()
    try:
        _reject(forged, "declares 268435456 decompressed bytes")
        _reject(blob[: 10 + hlen] + hidden, "does not declare its decompressed size")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024
