"""What a hostile secure-aggregation site sends, for the library and the REST tests."""

from __future__ import annotations

import numpy as np

from fedmedclip.secagg.encoding import FixedPoint
from fedmedclip.secagg.messages import MaskedInput


def shifted(masked: MaskedInput, units: np.ndarray, fixed: FixedPoint) -> MaskedInput:
    """What a hostile site can upload: any ring vector, here its honest one plus ``units``
    (masks add, so the shift lands unmasked in the sum)."""
    dtype = np.dtype(fixed.dtype).newbyteorder("<")
    ring = np.frombuffer(masked.masked, dtype=dtype).astype(fixed.dtype)
    ring += np.asarray(units, dtype=np.int64).astype(fixed.dtype)
    return masked.model_copy(update={"masked": ring.astype(dtype).tobytes()})
