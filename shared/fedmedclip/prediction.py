"""How a site scores its branches: the FAM's and the head's logits, their temperatures,
the combination chosen on validation and the prediction under it.

The node's evaluation, the inference API and the simulator all predict through here, so a
served prediction is the one the site scored when it chose its combination.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from fedmedclip.ensemble import (
    Combination,
    CombinationChoice,
    EnsembleOutput,
    choose_combination,
    fit_temperature,
)
from fedmedclip.model import PrivateHead, SharedAdapter, adapter_inputs


class LocalBranch(Protocol):
    """The site's local head as a branch of its combination (``fedmedclip.heads.LocalHead``;
    a protocol so that the heads, which predict through this module, stay above it)."""

    def logits(self, features: torch.Tensor, text_prototypes: torch.Tensor) -> torch.Tensor:
        """The local head's logits for embeddings (N x D)."""
        ...


@torch.no_grad()
def branch_logits(
    adapter: SharedAdapter,
    head: PrivateHead | None,
    features: torch.Tensor,
    text_prototypes: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits of the FAM branch and of the head (None without a head), in eval mode."""
    adapter.eval()
    device = next(adapter.parameters()).device
    if head is not None:
        head.to(device)
    adapted = adapter.adapt(adapter_inputs(head, features.to(device)))
    fam_logits = adapter.class_logits(adapted, text_prototypes.to(device)).cpu()
    if head is None:
        return fam_logits, None
    head.eval()
    return fam_logits, head(adapted).cpu()


@torch.no_grad()
def statistics_logits(
    adapter: SharedAdapter, head: PrivateHead, features: torch.Tensor
) -> torch.Tensor | None:
    """Logits of the federated class statistics' discriminant on the site's standardised
    embeddings; None when the global model holds none (see ``fedmedclip.class_statistics``)."""
    if adapter.class_stats is None:
        return None
    head.to(next(adapter.parameters()).device)
    out = adapter.class_stats.logits(head.standardise(features.to(head.input_mean.device)))
    return None if out is None else out.cpu()


@dataclass(frozen=True)
class Temperatures:
    """Per-branch temperatures applied before the entropy weighting (1 = uncalibrated)."""

    fam: float = 1.0
    head: float = 1.0


def calibrate(
    adapter: SharedAdapter,
    head: PrivateHead,
    features: torch.Tensor,
    labels: torch.Tensor,
    text_prototypes: torch.Tensor,
) -> Temperatures:
    """Fit each branch's temperature on the local validation split."""
    fam_logits, head_logits = branch_logits(adapter, head, features, text_prototypes)
    assert head_logits is not None
    return Temperatures(fit_temperature(fam_logits, labels), fit_temperature(head_logits, labels))


def choose(
    adapter: SharedAdapter,
    head: PrivateHead,
    features: torch.Tensor,
    labels: torch.Tensor,
    text_prototypes: torch.Tensor,
    temperatures: Temperatures = Temperatures(),
    local: LocalBranch | None = None,
) -> CombinationChoice:
    """The site's combination of its branches (and its local head, when given), chosen on
    its validation split."""
    fam_logits, head_logits = branch_logits(adapter, head, features, text_prototypes)
    assert head_logits is not None
    return choose_combination(
        fam_logits,
        head_logits,
        labels,
        stats_logits=statistics_logits(adapter, head, features),
        local_logits=None if local is None else local.logits(features, text_prototypes),
        fam_temperature=temperatures.fam,
        head_temperature=temperatures.head,
    )


def predict(
    adapter: SharedAdapter,
    head: PrivateHead,
    features: torch.Tensor,
    text_prototypes: torch.Tensor,
    temperatures: Temperatures = Temperatures(),
    combination: Combination = Combination(),
    local: LocalBranch | None = None,
) -> EnsembleOutput:
    """Prediction for embeddings (N x D): the branches under ``combination``."""
    fam_logits, head_logits = branch_logits(adapter, head, features, text_prototypes)
    assert head_logits is not None
    return combination.apply(
        fam_logits,
        head_logits,
        stats_logits=statistics_logits(adapter, head, features),
        local_logits=None if local is None else local.logits(features, text_prototypes),
        fam_temperature=temperatures.fam,
        head_temperature=temperatures.head,
    )
