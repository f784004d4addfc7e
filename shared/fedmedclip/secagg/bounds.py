"""A bound on each site's contribution that the hub can check on the sum alone.

Masking hides every update, so the hub cannot clip or refuse one. Instead each honest site
clips before masking: its update to the round's ``norm_bound`` C (L2) and its weight to
``[1, max_weight]``. Whatever the honest sites sent then lies in a set the hub can test on
the unmasked aggregate: a weighted mean of vectors of norm at most C has norm at most C, and
``k`` survivors' total weight lies between ``k`` and ``k * max_weight``. An aggregate outside
that set carries an update no honest site sent, and the round fails instead of publishing.

This does not stop a site that stays within the bound (it can still send any update of
norm at most C, and any weight up to the cap); it stops one site from moving the mean beyond
what an honest site could, or from amplifying it with a huge or negative weight when that
leaves the aggregate outside the bound.
"""

from __future__ import annotations

import math

import numpy as np

from fedmedclip.secagg.params import RoundParams


def clip_values(values: np.ndarray, norm_bound: float | None) -> np.ndarray:
    """``values`` scaled down to L2 norm at most ``norm_bound`` (unchanged when None)."""
    if norm_bound is None:
        return values
    norm = float(np.linalg.norm(values))
    return values if norm <= norm_bound else values * (norm_bound / norm)


def clip_weight(weight: int, max_weight: int | None) -> int:
    """The weight a site masks: at least 1 under a cap (the hub's lower bound counts on it),
    and at most the cap."""
    if max_weight is None:
        return weight
    if weight < 1:
        raise ValueError(f"weight must be at least 1 in a round with a weight cap, got {weight}")
    return min(weight, max_weight)


def violation(params: RoundParams, total: np.ndarray, weight: int, survivors: int) -> str | None:
    """Why the survivors' sums (``total`` of weighted values, ``weight``) are outside what
    honest sites can produce, or None when they are within it."""
    if params.max_weight is not None and not survivors <= weight <= survivors * params.max_weight:
        return (
            f"the survivors' total weight {weight} is outside [{survivors}, "
            f"{survivors * params.max_weight}] ({survivors} sites, at most {params.max_weight} "
            "each): a site sent a weight no honest site sends"
        )
    if params.norm_bound is None:
        return None
    if weight <= 0:
        return f"the survivors' total weight {weight} is not positive"
    norm = float(np.linalg.norm(total)) / weight
    # Rounding errs by at most 2^-(frac_bits+1) per value of the mean (see encoding).
    slack = math.sqrt(params.dimension) * 2.0 ** -(params.frac_bits + 1)
    if norm > params.norm_bound * (1 + 1e-9) + slack:
        return (
            f"the weighted mean has norm {norm:.4g}, above the round's bound "
            f"{params.norm_bound:.4g}: a site sent an update no honest site sends"
        )
    return None
