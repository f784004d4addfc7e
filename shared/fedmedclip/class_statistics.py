"""Federated class statistics: the shared component that teaches a site its rare classes.

A hospital that holds six images of a class cannot learn it from them, however the head is
trained; the other hospitals hold hundreds. The learnable prototypes carry some of that
knowledge, but they are trained through the FAM's cosine logits and transfer poorly on the
benchmark (9 of 24 rare images, against 17 of 24 for a linear classifier on the pooled
embeddings, ``docs/method.md``). What does transfer is what that pooled classifier rests
on: each class's mean embedding and the spread of embeddings around their class mean.

Each site fills three buffers of the shared adapter from its standardised training
embeddings (the head's per-site standardisation, so the hospital's scanner is taken out
first), each divided by the site's image count N:

* ``sums``: per-class sum of embeddings / N (C x D),
* ``counts``: per-class image count / N (C),
* ``moment``: sum of outer products x x^T / N (D x D).

They travel in the update like any other tensor. The hub's sample-weighted mean (weight N
per site) then yields the pooled sums, counts and moment divided by the federation's total,
exactly, with no new protocol: secure aggregation and the codec carry them as they are.
From those every site builds the same linear discriminant (class means, one shared
within-class covariance shrunk towards its average variance) and scores with it as a third
branch of its combination choice (:mod:`fedmedclip.ensemble`).

What it reveals: a site's class means and second moment of embeddings, no more than its
FAM update already lets a curious hub estimate, and under secure aggregation only the
federation's sums. Under differential privacy the statistics are not sent at all
(:func:`drop_statistics`): the noise is calibrated for the trained tensors only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

PREFIX = "class_stats."
"""Name prefix of the statistics tensors in the shared state."""

SHRINKAGE = 0.1
"""Weight of the isotropic target in the shrunk covariance. A few hundred images estimate a
384 x 384 covariance badly; on the benchmark 0.1 scored best of 0.1 / 0.3 / 0.6, and the
diagonal alone (shrinkage without correlations) fell to near chance (docs/method.md)."""

ABSENT_LOGIT = -1e4
"""Logit of a class no site has reported: never predicted, finite for the log-likelihoods."""


class ClassStatistics(nn.Module):
    """The three statistics buffers; all zero (unavailable) until a site fills them."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("sums", torch.zeros(n_classes, dim))
        self.register_buffer("counts", torch.zeros(n_classes))
        self.register_buffer("moment", torch.zeros(dim, dim))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # A global model published before the statistics existed loads them as zeros, that
        # is "unavailable": its sites simply never choose the statistics branch.
        for name, buffer in self.named_buffers():
            state_dict.setdefault(prefix + name, torch.zeros_like(buffer))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def fill(self, standardised: torch.Tensor, labels: torch.Tensor) -> None:
        """Set the buffers to this site's statistics, each divided by its image count."""
        n = len(labels)
        if n == 0:
            return
        x = standardised.to(self.sums.device, torch.float64)
        one_hot = F.one_hot(labels.to(self.sums.device), self.counts.numel()).to(torch.float64)
        self.sums.copy_(one_hot.T @ x / n)
        self.counts.copy_(one_hot.sum(dim=0) / n)
        self.moment.copy_(x.T @ x / n)

    def available(self) -> bool:
        """True once the statistics hold at least two classes (a discriminant needs them)."""
        return int((self.counts > 0).sum()) >= 2 and bool(torch.isfinite(self.moment).all())

    def discriminant(self) -> Discriminant | None:
        """:meth:`_solve`, cached until a buffer changes: a /predict call would otherwise
        pay a D x D solve (about 11 ms at D = 768) for the same answer every time."""
        key = tuple((b._version, b.data_ptr(), b.device) for b in self.buffers())
        if getattr(self, "_cache_key", None) != key:
            self._cache_key, self._cache = key, self._solve()
        return self._cache

    @torch.no_grad()
    def _solve(self) -> Discriminant | None:
        """The linear discriminant the statistics define; None when they are unavailable or
        do not describe a covariance (statistics a hostile sender shaped), so that no
        prediction ever fails on them.

        Equal class priors: the score is the class-conditional log-likelihood up to a shared
        constant, so, like the balanced loss of the other branches, it predicts the
        balanced posterior and does not favour the federation's common classes.
        """
        if not self.available():
            return None
        counts = self.counts.to(torch.float64)
        present = counts > 0
        means = self.sums.to(torch.float64)[present] / counts[present, None]
        weights = counts[present] / counts[present].sum()
        within = self.moment.to(torch.float64) / counts.sum() - (means.T * weights) @ means
        variance = within.diagonal().mean()
        if not variance > 0:
            return None
        target = variance * torch.eye(within.shape[0], dtype=torch.float64, device=within.device)
        shrunk = (1.0 - SHRINKAGE) * within + SHRINKAGE * target
        try:
            directions = torch.linalg.solve(shrunk, means.T)  # D x C'
        except torch.linalg.LinAlgError:
            return None
        if not torch.isfinite(directions).all():
            return None
        return Discriminant(directions, -0.5 * (means.T * directions).sum(dim=0), present)

    @torch.no_grad()
    def logits(self, standardised: torch.Tensor) -> torch.Tensor | None:
        """Discriminant logits of standardised embeddings (N x C); None without one."""
        found = self.discriminant()
        return None if found is None else found.logits(standardised)


@dataclass(frozen=True)
class Discriminant:
    """Directions (D x C') and offsets (C') of the classes some site reported (``present``)."""

    directions: torch.Tensor
    offsets: torch.Tensor
    present: torch.Tensor

    def logits(self, standardised: torch.Tensor) -> torch.Tensor:
        x = standardised.to(self.directions.device, torch.float64)
        out = torch.full(
            (len(x), self.present.numel()), ABSENT_LOGIT, dtype=torch.float64, device=x.device
        )
        out[:, self.present] = x @ self.directions + self.offsets
        return out.to(torch.float32)


def is_statistic(name: str) -> bool:
    """Whether a shared-state tensor is one of the class statistics."""
    return name.startswith(PREFIX)


def statistics_of(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The statistics tensors of a shared state, named as in :class:`ClassStatistics`."""
    return {k.removeprefix(PREFIX): v for k, v in state.items() if is_statistic(k)}


def drop_statistics(delta: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``delta`` with the statistics zeroed: what a site sends when they must not be shared
    (under differential privacy, whose noise and clipping cover the trained tensors only)."""
    return {k: torch.zeros_like(v) if is_statistic(k) else v for k, v in delta.items()}
