"""Classification metrics computed from probabilities and integer labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

METRIC_NAMES = ("accuracy", "balanced_accuracy", "macro_f1", "ece")


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, n_classes: int, n_bins: int = 15
) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 (over classes present) and expected calibration error.

    Balanced accuracy and macro-F1 average over the classes present in ``labels`` or in the
    predictions, so a site that lacks a class is not penalised for it.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return {name: float("nan") for name in METRIC_NAMES}
    pred = probabilities.argmax(axis=1)
    correct = pred == labels
    recalls, f1s = [], []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (labels == c))
        fp = np.sum((pred == c) & (labels != c))
        fn = np.sum((pred != c) & (labels == c))
        if tp + fn > 0:
            recalls.append(tp / (tp + fn))
        if tp + fp + fn > 0:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    confidence = probabilities.max(axis=1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return {
        "accuracy": float(correct.mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "macro_f1": float(np.mean(f1s)),
        "ece": float(ece),
    }


def mean_over_sites(per_site: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Unweighted mean of each metric over sites (every hospital counts the same)."""
    names: Sequence[str] = METRIC_NAMES
    return {n: float(np.mean([m[n] for m in per_site.values()])) for n in names if per_site}


RARE_CLASS_LIMIT = 5
"""A class is rare at a site when the site has fewer training examples of it than this."""


def rare_class_hits(
    probabilities: np.ndarray,
    labels: np.ndarray,
    train_counts: Sequence[int],
    limit: int = RARE_CLASS_LIMIT,
) -> dict[str, float]:
    """Hits and count of the evaluated images whose class is rare in the site's training data.

    Returned as counts, not a recall: a site holds a handful of such images at most, so
    the recall is only meaningful pooled over sites and seeds (sum of hits over sum of
    counts). Rare classes are where a federation can teach a site what it has not seen.
    """
    rare = np.flatnonzero(np.asarray(train_counts) < limit)
    labels = np.asarray(labels, dtype=np.int64)
    selected = np.isin(labels, rare)
    pred = np.asarray(probabilities).argmax(axis=1)
    return {
        "rare_hits": float(np.sum(pred[selected] == labels[selected])),
        "rare_count": float(np.sum(selected)),
    }
