"""Simulated federation partitions of a pooled dataset."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fedmedclip.data.partition import dirichlet_partition, partition_by_column


def _labels(n: int = 600, classes: int = 5) -> list[int]:
    return [int(x) for x in np.random.default_rng(0).integers(0, classes, n)]


def _skew(labels: list[int], parts: list[list[int]]) -> float:
    """Mean total-variation distance between each part's label mix and the pooled mix."""
    classes = sorted(set(labels))
    pooled = np.array([labels.count(c) for c in classes]) / len(labels)
    distances = []
    for part in parts:
        counts = Counter(labels[i] for i in part)
        mix = np.array([counts[c] for c in classes]) / len(part)
        distances.append(0.5 * np.abs(mix - pooled).sum())
    return float(np.mean(distances))


@pytest.mark.parametrize("alpha", [0.05, 0.5, 100.0])
def test_every_index_lands_in_exactly_one_part(alpha: float) -> None:
    labels = _labels()
    parts = dirichlet_partition(labels, n_parts=6, alpha=alpha, seed=1)
    assert len(parts) == 6
    assert sorted(i for part in parts for i in part) == list(range(len(labels)))
    assert all(part == sorted(part) for part in parts)


def test_small_parts_are_topped_up_to_the_minimum() -> None:
    labels = _labels(200, classes=2)
    parts = dirichlet_partition(labels, n_parts=10, alpha=0.01, seed=0, min_per_part=5)
    assert min(len(part) for part in parts) >= 5
    assert sum(len(part) for part in parts) == 200


def test_small_alpha_gives_label_skew() -> None:
    labels = _labels()
    skewed = dirichlet_partition(labels, 5, alpha=0.1, seed=2)
    balanced = dirichlet_partition(labels, 5, alpha=1000.0, seed=2)
    assert _skew(labels, skewed) > 0.4
    assert _skew(labels, balanced) < 0.1


def test_partition_is_deterministic_for_a_seed() -> None:
    labels = _labels()
    first = dirichlet_partition(labels, 4, alpha=0.5, seed=9)
    assert dirichlet_partition(labels, 4, alpha=0.5, seed=9) == first
    assert dirichlet_partition(labels, 4, alpha=0.5, seed=10) != first


@pytest.mark.parametrize(
    ("n_parts", "alpha", "message"),
    [(0, 0.5, "n_parts"), (3, 0.0, "alpha"), (4, 0.5, "cannot give 4 parts 2 samples each")],
)
def test_impossible_partitions_are_refused(n_parts: int, alpha: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dirichlet_partition([0, 1, 0, 1, 0], n_parts, alpha, seed=0)


def test_partition_by_column_groups_indices_by_value() -> None:
    sites = ["vienna", "barcelona", "vienna", "sydney", "barcelona"]
    assert partition_by_column(list(range(5)), sites) == {
        "barcelona": [1, 4],
        "sydney": [3],
        "vienna": [0, 2],
    }


def test_partition_by_column_refuses_mismatched_or_empty_values() -> None:
    with pytest.raises(ValueError, match="2 column values for 3 records"):
        partition_by_column([1, 2, 3], ["a", "b"])
    with pytest.raises(ValueError, match="record 1 has an empty column value"):
        partition_by_column([1, 2], ["a", "  "])
