"""Statistics that tell a site when its model stops fitting its patients.

Everything here runs where the images are and looks only at what the model already
computes (embeddings, probabilities, preprocessed pixels) and at what the node stored with
the head (a sample of training embeddings and the training class counts); nothing leaves
the site.

* Embedding drift: the squared maximum mean discrepancy (MMD) between recent embeddings
  and the head's training sample, with a Gaussian (RBF) kernel whose bandwidth is the
  median pairwise distance of the pooled sample. Whether the value is larger than chance
  is decided by a permutation test: the pooled rows are shuffled between the two groups
  ``permutations`` times, and the observed MMD is compared with the ``1 - alpha`` quantile
  of the shuffled values. The kernel matrix is computed once; a permutation only re-indexes
  it, so 200 permutations of 500 rows take milliseconds.
* Class prior: total variation distance between the predicted-class distribution and the
  training class distribution (0 = identical, 1 = disjoint).
* Histograms of confidences, entropies and ensemble weights on fixed bins, so running
  counts can be added up without keeping the values.
* Feedback metrics: accuracy, balanced accuracy (mean per-class recall over the classes
  that occur) and expected calibration error (ECE, equal-width confidence bins).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

DEFAULT_PERMUTATIONS = 200
DEFAULT_ALPHA = 0.01


@dataclass(frozen=True)
class MmdTest:
    """Result of a two-sample MMD permutation test."""

    statistic: float
    """Biased estimate of MMD² between the two samples."""
    threshold: float
    """The ``1 - alpha`` quantile of MMD² under random relabelling."""
    p_value: float
    """Share of permutations (the observed split counted once) with MMD² >= the observed."""
    bandwidth: float
    alpha: float

    @property
    def drift(self) -> bool:
        return self.statistic > self.threshold


def _median_bandwidth(distances: torch.Tensor) -> float:
    """Median of the positive pairwise distances (the usual heuristic), at least 1e-6."""
    positive = distances[distances > 0]
    if positive.numel() == 0:
        return 1.0
    return max(float(positive.median()), 1e-6)


def _mmd2_from_kernel(kernel: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """MMD² for each row of the boolean masks ``first`` (P x N) over the pooled kernel."""
    a = first.double()
    b = 1.0 - a
    na, nb = a.sum(dim=1), b.sum(dim=1)
    kaa = torch.einsum("pi,ij,pj->p", a, kernel, a) / (na * na)
    kbb = torch.einsum("pi,ij,pj->p", b, kernel, b) / (nb * nb)
    kab = torch.einsum("pi,ij,pj->p", a, kernel, b) / (na * nb)
    return kaa + kbb - 2 * kab


def mmd_permutation_test(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    permutations: int = DEFAULT_PERMUTATIONS,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> MmdTest:
    """Test whether rows of ``x`` (n x d) and ``y`` (m x d) come from one distribution."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need two matrices with the same width, got {x.shape} and {y.shape}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("each sample needs at least two rows")
    if not 0 < alpha < 1 or permutations < 1:
        raise ValueError("alpha must be in (0, 1) and permutations at least 1")
    pooled = torch.cat([x, y]).double()
    distances = torch.cdist(pooled, pooled)
    bandwidth = _median_bandwidth(distances)
    kernel = torch.exp(-(distances**2) / (2 * bandwidth**2))
    n, total = len(x), len(pooled)
    observed_mask = torch.zeros(1, total, dtype=torch.bool)
    observed_mask[0, :n] = True
    generator = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(total, generator=generator) for _ in range(permutations)])
    shuffled_mask = order < n  # rows whose shuffled position falls into the first group
    observed = float(_mmd2_from_kernel(kernel, observed_mask)[0])
    null = _mmd2_from_kernel(kernel, shuffled_mask)
    threshold = float(torch.quantile(null, 1 - alpha))
    p_value = (1 + int((null >= observed).sum())) / (1 + permutations)
    return MmdTest(observed, threshold, p_value, bandwidth, alpha)


def histogram(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """Counts of ``values`` in the bins ``[e_i, e_i+1)`` (the last bin is closed).

    Values outside the edges are clipped into the first or last bin, so the counts always
    add up to ``len(values)``.
    """
    if len(edges) < 2:
        raise ValueError("a histogram needs at least two edges")
    counts = [0] * (len(edges) - 1)
    for value in values:
        index = 0
        while index < len(counts) - 1 and value >= edges[index + 1]:
            index += 1
        counts[index] += 1
    return counts


def uniform_edges(low: float, high: float, bins: int) -> list[float]:
    """``bins + 1`` equally spaced edges from ``low`` to ``high``."""
    return [low + (high - low) * i / bins for i in range(bins + 1)]


def normalized_entropy(probabilities: Sequence[float]) -> float:
    """Shannon entropy divided by its maximum (log of the class count): 0 sure, 1 uniform."""
    if len(probabilities) < 2:
        return 0.0
    entropy = -sum(p * math.log(p) for p in probabilities if p > 0)
    return entropy / math.log(len(probabilities))


def distribution(counts: Sequence[float]) -> list[float]:
    """Counts scaled to sum to one (uniform when they are all zero)."""
    total = float(sum(counts))
    if total <= 0:
        return [1.0 / len(counts)] * len(counts)
    return [c / total for c in counts]


def total_variation(p: Sequence[float], q: Sequence[float]) -> float:
    """Half the L1 distance between two distributions over the same classes."""
    if len(p) != len(q):
        raise ValueError("the distributions have different class counts")
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q, strict=True))


def accuracy(truth: Sequence[int], predicted: Sequence[int]) -> float:
    if not truth:
        raise ValueError("no labelled predictions")
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)


def balanced_accuracy(truth: Sequence[int], predicted: Sequence[int]) -> float:
    """Mean recall over the true classes present (a rare class weighs as much as a common)."""
    if not truth:
        raise ValueError("no labelled predictions")
    recalls = []
    for cls in sorted(set(truth)):
        rows = [p for t, p in zip(truth, predicted, strict=True) if t == cls]
        recalls.append(sum(p == cls for p in rows) / len(rows))
    return sum(recalls) / len(recalls)


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> float:
    """Sum over equal-width confidence bins of (bin share) x |accuracy - mean confidence|.

    Bins are ``(k/bins, (k+1)/bins]``, the first one also holding 0.
    """
    if not confidences:
        raise ValueError("no labelled predictions")
    members: list[list[int]] = [[] for _ in range(bins)]
    for index, confidence in enumerate(confidences):
        members[min(bins - 1, max(0, math.ceil(confidence * bins) - 1))].append(index)
    error = 0.0
    for rows in members:
        if rows:
            hit_rate = sum(bool(correct[i]) for i in rows) / len(rows)
            mean_confidence = sum(confidences[i] for i in rows) / len(rows)
            error += len(rows) / len(confidences) * abs(hit_rate - mean_confidence)
    return error
