"""Prediction-time ensemble of the FAM (text prototype) branch and the private head."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

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
