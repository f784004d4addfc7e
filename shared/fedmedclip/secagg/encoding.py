"""Fixed-point vectors modulo 2^k: what a site masks and the hub sums.

Masks only cancel in a ring, so updates leave the float world before masking: each value is
scaled by ``2**frac_bits``, rounded to the nearest integer and reduced modulo ``2**bits``
(numpy's unsigned wrap-around does the reduction for free). Sums of encoded vectors decode to
the sum of the values as long as the true sum lies in ``[-2**(bits-1), 2**(bits-1))`` in
integer units; ``check_headroom`` refuses, at the site, a vector that could break that bound
for the largest federation the round allows. Rounding errs by at most ``2**-(frac_bits+1)``
per value and site, so a weighted mean errs by at most ``2**-(frac_bits+1)``.

The last coordinate of every secure-aggregation vector is the site's aggregation weight (its
sample count), encoded as a plain integer: the hub learns the total weight, never one site's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_DTYPES = {32: (np.uint32, np.int32), 64: (np.uint64, np.int64)}


@dataclass(frozen=True)
class FixedPoint:
    """The ring ``Z_{2^bits}`` and the scale used to put floats in it."""

    bits: int = 32
    frac_bits: int = 12

    def __post_init__(self) -> None:
        if self.bits not in _DTYPES:
            raise ValueError(f"bits must be one of {sorted(_DTYPES)}, got {self.bits}")
        if not 0 <= self.frac_bits < self.bits - 8:
            raise ValueError(f"frac_bits must be in [0, {self.bits - 8}), got {self.frac_bits}")

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return _DTYPES[self.bits][0]

    @property
    def bytes_per_value(self) -> int:
        return self.bits // 8

    def check_headroom(self, units: np.ndarray, max_summands: int) -> None:
        """Refuse integer ``units`` whose sum over ``max_summands`` sites could wrap around."""
        limit = 2 ** (self.bits - 1) // max_summands
        largest = int(np.max(np.abs(units))) if units.size else 0
        if largest >= limit:
            raise ValueError(
                f"a value of {largest} fixed-point units does not fit: with {max_summands} sites "
                f"each must stay below {limit}; clip the update or use more bits"
            )

    def encode(self, values: np.ndarray, weight: int, max_summands: int) -> np.ndarray:
        """``[round(values * 2^frac_bits), weight]`` modulo ``2^bits``."""
        values = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(values)):
            raise ValueError("the update contains NaN or infinite values")
        if weight < 0:
            raise ValueError(f"weight must be non-negative, got {weight}")
        units = np.rint(np.ldexp(values, self.frac_bits))
        units = np.append(units, float(weight))
        self.check_headroom(units, max_summands)
        return units.astype(np.int64).astype(self.dtype)

    def decode_sum(self, total: np.ndarray) -> tuple[np.ndarray, int]:
        """The float sum of the values and the integer total weight of an encoded sum."""
        signed = np.asarray(total, dtype=self.dtype).view(_DTYPES[self.bits][1])
        return np.ldexp(signed[:-1].astype(np.float64), -self.frac_bits), int(signed[-1])
