import numpy as np
import pytest

from fedmedclip.secagg.encoding import FixedPoint


@pytest.mark.parametrize("bits", [32, 64])
def test_sum_of_encodings_decodes_to_the_sum_within_rounding(bits: int) -> None:
    fixed = FixedPoint(bits=bits, frac_bits=12)
    rng = np.random.default_rng(0)
    values = [rng.normal(scale=3.0, size=50) for _ in range(4)]
    total = sum(fixed.encode(v, weight=w, max_summands=4) for w, v in enumerate(values, 1))
    decoded, weight = fixed.decode_sum(total)
    assert weight == 1 + 2 + 3 + 4
    assert np.abs(decoded - sum(values)).max() <= 4 * 2.0**-13 + 1e-12


def test_negative_values_wrap_and_come_back() -> None:
    fixed = FixedPoint()
    encoded = fixed.encode(np.array([-1.5, 0.25]), weight=0, max_summands=3)
    assert encoded.dtype == np.uint32 and int(encoded[0]) > 2**31  # wrapped around
    decoded, _ = fixed.decode_sum(encoded)
    assert decoded.tolist() == [-1.5, 0.25]


def test_a_value_that_could_overflow_the_sum_is_refused() -> None:
    fixed = FixedPoint(bits=32, frac_bits=12)
    limit = 2**31 // 10 / 2**12  # largest value ten sites may each send
    fixed.encode(np.array([limit * 0.99]), weight=1, max_summands=10)
    with pytest.raises(ValueError, match="does not fit"):
        fixed.encode(np.array([limit * 1.01]), weight=1, max_summands=10)


def test_non_finite_values_and_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        FixedPoint().encode(np.array([np.nan]), weight=1, max_summands=3)
    with pytest.raises(ValueError, match="bits"):
        FixedPoint(bits=16)
