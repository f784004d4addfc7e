"""Prediction-time ensemble of the FAM (text prototype) branch and the private head."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedmedclip.losses import entropy_from_logits


@dataclass(frozen=True)
class EnsembleOutput:
    """Probabilities of the ensemble and of each branch, and the head weight ``alpha``."""

    probabilities: torch.Tensor
    fam_probabilities: torch.Tensor
    head_probabilities: torch.Tensor
    alpha: torch.Tensor


def ensemble(
    fam_logits: torch.Tensor,
    head_logits: torch.Tensor,
    *,
    fam_temperature: float = 1.0,
    head_temperature: float = 1.0,
) -> EnsembleOutput:
    """``p = (1 - a) * p_fam + a * p_head`` with a per-sample ``a = H_fam / (H_fam + H_head)``.

    The more confident (lower entropy) branch weighs more. Temperatures calibrated on the
    local validation split are applied first, because entropy reflects confidence only when
    a branch is calibrated; with the defaults of 1 this is the paper's ensemble.
    """
    fam_scaled = fam_logits / fam_temperature
    head_scaled = head_logits / head_temperature
    h_fam = entropy_from_logits(fam_scaled)
    h_head = entropy_from_logits(head_scaled)
    alpha = h_fam / (h_fam + h_head).clamp_min(1e-12)
    p_fam = torch.softmax(fam_scaled, dim=-1)
    p_head = torch.softmax(head_scaled, dim=-1)
    p = (1.0 - alpha).unsqueeze(-1) * p_fam + alpha.unsqueeze(-1) * p_head
    return EnsembleOutput(p, p_fam, p_head, alpha)


TEMPERATURE_PRIOR_SIGMA = 0.5
"""Spread of the log-normal prior on a fitted temperature (T within about 0.4-2.7 at 2 sd)."""


def fit_temperature(
    logits: torch.Tensor, labels: torch.Tensor, prior_sigma: float = TEMPERATURE_PRIOR_SIGMA
) -> float:
    """Temperature minimising the negative log-likelihood on held-out logits, shrunk to 1.

    Why the prior: a hospital's validation split can be a dozen images. On so few, a branch
    that happens to get them all right drives the plain NLL fit to its smallest temperature,
    and the near-certain branch then dominates the entropy-weighted ensemble. A log-normal
    prior centred on T = 1 (MAP estimate) leaves large splits to the data and keeps small
    ones near the uncalibrated logits. It guards against that degenerate fit; it did not
    make calibration pay off in the simulator (bench/README.md), which is why rounds
    calibrate only when asked. A log-spaced grid search: one dimension, cheap, and it
    never diverges the way an optimiser can.
    """
    n = len(labels)
    if n == 0:
        return 1.0
    grid = torch.logspace(-2, 2, steps=81)
    losses = [
        torch.nn.functional.cross_entropy(logits / t, labels).item()
        + math.log(t) ** 2 / (2 * prior_sigma**2 * n)
        for t in grid.tolist()
    ]
    return float(grid[int(torch.tensor(losses).argmin())])


CombinationKind = Literal["entropy", "head", "fam", "weighted"]
WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(1, 10))
"""Head weights a ``weighted`` combination is fitted over (0 and 1 are ``fam`` and ``head``)."""


class Combination(BaseModel):
    """How a site combines the FAM branch and its private head, chosen on its validation split.

    ``entropy``: the paper's per-sample entropy weighting (the default, and what a head
    recorded without a choice gets). ``head`` / ``fam``: one branch alone. ``weighted``: a
    fixed head weight ``head_weight`` for every sample. Stored with the head (JSON), so the
    inference API combines the branches exactly as the site validated them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: CombinationKind = "entropy"
    head_weight: float | None = Field(default=None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _weight_only_when_weighted(self) -> Combination:
        if (self.kind == "weighted") != (self.head_weight is not None):
            raise ValueError("head_weight is required for kind 'weighted' and only for it")
        return self

    def apply(
        self,
        fam_logits: torch.Tensor,
        head_logits: torch.Tensor,
        *,
        fam_temperature: float = 1.0,
        head_temperature: float = 1.0,
    ) -> EnsembleOutput:
        """Probabilities under this combination; ``alpha`` is the head's weight per sample."""
        if self.kind == "entropy":
            return ensemble(
                fam_logits,
                head_logits,
                fam_temperature=fam_temperature,
                head_temperature=head_temperature,
            )
        p_fam = torch.softmax(fam_logits / fam_temperature, dim=-1)
        p_head = torch.softmax(head_logits / head_temperature, dim=-1)
        weight = {"head": 1.0, "fam": 0.0}.get(self.kind, self.head_weight)
        assert weight is not None  # the validator guarantees it for "weighted"
        alpha = torch.full(p_fam.shape[:1], weight, dtype=p_fam.dtype, device=p_fam.device)
        return EnsembleOutput((1.0 - weight) * p_fam + weight * p_head, p_fam, p_head, alpha)


@dataclass(frozen=True)
class CombinationChoice:
    """The chosen combination and its evidence: each candidate's class-balanced mean
    log-likelihood on validation and the standard error of the last accepted gain."""

    combination: Combination
    scores: dict[str, float]
    noise: float


NOISE_Z = 1.0
"""A candidate must beat the simpler incumbent by this many standard errors of the gain."""


def _balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample weights: each class present counts the same (they sum to 1)."""
    counts = torch.bincount(labels)
    present = int((counts > 0).sum())
    return 1.0 / (present * counts[labels].double())


def _gain(
    scores: torch.Tensor, incumbent: torch.Tensor, weights: torch.Tensor
) -> tuple[float, float]:
    """Class-balanced gain of per-sample ``scores`` over ``incumbent``, and its standard error.

    Paired: each validation image compares the two combinations on itself, so the noise is
    that of the difference, not of either score.
    """
    d = weights * (scores - incumbent)
    n = len(d)
    se = float(d.std(unbiased=True) * math.sqrt(n)) if n > 1 else math.inf
    return float(d.sum()), se


LOG_FLOOR = 1e-6
"""Smallest probability a log-likelihood counts: one confident miss must not outweigh a split."""


def choose_combination(
    fam_logits: torch.Tensor,
    head_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    fam_temperature: float = 1.0,
    head_temperature: float = 1.0,
    z: float = NOISE_Z,
) -> CombinationChoice:
    """Pick the combination with the best class-balanced log-likelihood on the validation split.

    Robust to small splits: candidates are tried from the simplest up (the paper's entropy
    ensemble, then one branch alone, then a fitted head weight, which is tuned on the same
    split and so flatters itself), and one replaces the incumbent only when its gain
    exceeds ``z`` standard errors of the paired gain; on a handful of images the site keeps
    the paper's ensemble. Why log-likelihood and not hits: on the simulator's 15-image
    splits a hit count moves in steps of a whole image and chose worse than the default
    (docs/method.md); the log-likelihood sees how far each answer was from right. Why
    class-balanced: with label skew a plain mean rewards ignoring the rare classes, which
    is where the shared branch helps.
    """
    if len(labels) == 0:
        return CombinationChoice(Combination(), {}, 0.0)
    temps = {"fam_temperature": fam_temperature, "head_temperature": head_temperature}
    weights = _balanced_weights(labels)
    rows = torch.arange(len(labels))

    def log_likelihood(combination: Combination) -> torch.Tensor:
        predicted = combination.apply(fam_logits, head_logits, **temps).probabilities
        return predicted[rows, labels].double().clamp_min(LOG_FLOOR).log()

    candidates = [Combination(), Combination(kind="head"), Combination(kind="fam")]
    fitted = [Combination(kind="weighted", head_weight=w) for w in WEIGHT_GRID]
    per_sample = {c: log_likelihood(c) for c in candidates + fitted}
    scores = {_label(c): float((weights * s).sum()) for c, s in per_sample.items()}
    best_fitted = max(fitted, key=lambda c: scores[_label(c)])
    chosen, noise = candidates[0], 0.0
    for candidate in (*candidates[1:], best_fitted):
        gain, se = _gain(per_sample[candidate], per_sample[chosen], weights)
        if gain > 0 and gain > z * se:
            chosen, noise = candidate, se
    return CombinationChoice(chosen, scores, noise)


def _label(combination: Combination) -> str:
    if combination.kind == "weighted":
        return f"weighted:{combination.head_weight:g}"
    return combination.kind
