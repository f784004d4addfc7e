"""Prediction-time ensemble of the FAM (text prototype) branch and the private head."""

from __future__ import annotations

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


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature minimising the negative log-likelihood on held-out logits.

    A log-spaced grid search: one dimension, cheap, and never diverges the way an optimiser
    can on a handful of validation samples.
    """
    if len(labels) == 0:
        return 1.0
    grid = torch.logspace(-2, 2, steps=81)
    losses = [torch.nn.functional.cross_entropy(logits / t, labels).item() for t in grid.tolist()]
    return float(grid[int(torch.tensor(losses).argmin())])
