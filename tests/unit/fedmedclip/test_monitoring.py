"""The drift and feedback statistics, against hand computations and known distributions."""

from __future__ import annotations

import math

import pytest
import torch

from fedmedclip.monitoring import (
    accuracy,
    balanced_accuracy,
    distribution,
    expected_calibration_error,
    histogram,
    mmd_permutation_test,
    normalized_entropy,
    total_variation,
    uniform_edges,
)


def _gauss(n: int, shift: float, seed: int, dim: int = 16) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) + shift


def test_mmd_does_not_flag_two_samples_of_one_distribution():
    result = mmd_permutation_test(_gauss(80, 0.0, 1), _gauss(80, 0.0, 2), seed=3)
    assert not result.drift
    assert result.p_value > 0.05
    assert result.bandwidth > 0


def test_mmd_flags_a_shifted_sample():
    result = mmd_permutation_test(_gauss(80, 0.0, 1), _gauss(80, 0.7, 2), seed=3)
    assert result.drift
    assert result.statistic > result.threshold
    assert result.p_value == pytest.approx(1 / 201)


def test_mmd_matches_the_definition_on_a_tiny_example():
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[3.0], [4.0]])
    result = mmd_permutation_test(x, y, permutations=10)
    # Positive pairwise distances, each pair twice: 1 1 1 1 2 2 3 3 3 3 4 4; the (lower)
    # median is 2.
    assert result.bandwidth == pytest.approx(2.0)

    def k(a: float, b: float) -> float:
        return math.exp(-((a - b) ** 2) / (2 * 2.0**2))

    kxx = (k(0, 0) + k(1, 1) + 2 * k(0, 1)) / 4
    kyy = (k(3, 3) + k(4, 4) + 2 * k(3, 4)) / 4
    kxy = (k(0, 3) + k(0, 4) + k(1, 3) + k(1, 4)) / 4
    assert result.statistic == pytest.approx(kxx + kyy - 2 * kxy)


def test_mmd_refuses_mismatched_samples():
    with pytest.raises(ValueError, match="same width"):
        mmd_permutation_test(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="two rows"):
        mmd_permutation_test(torch.zeros(1, 2), torch.zeros(3, 2))


def test_histogram_counts_and_clips():
    edges = uniform_edges(0.0, 1.0, 4)
    assert edges == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert histogram([0.0, 0.1, 0.25, 0.6, 1.0, 1.5, -1.0], edges) == [3, 1, 1, 2]


def test_entropy_prior_and_distance():
    assert normalized_entropy([1.0, 0.0, 0.0]) == 0.0
    assert normalized_entropy([1 / 3] * 3) == pytest.approx(1.0)
    assert distribution([1, 3]) == [0.25, 0.75]
    assert distribution([0, 0]) == [0.5, 0.5]
    assert total_variation([0.5, 0.5], [1.0, 0.0]) == pytest.approx(0.5)


def test_feedback_metrics_by_hand():
    truth = [0, 0, 0, 1]
    predicted = [0, 0, 1, 1]
    assert accuracy(truth, predicted) == 0.75
    # recall of class 0 is 2/3, of class 1 is 1/1
    assert balanced_accuracy(truth, predicted) == pytest.approx((2 / 3 + 1) / 2)
    confidences = [0.95, 0.85, 0.9, 0.55]
    correct = [t == p for t, p in zip(truth, predicted, strict=True)]
    # bins (0.9,1.0]: 0.95 right; (0.8,0.9]: 0.85 right, 0.9 wrong; (0.5,0.6]: 0.55 right
    expected = 0.25 * abs(1 - 0.95) + 0.5 * abs(0.5 - 0.875) + 0.25 * abs(1 - 0.55)
    assert expected_calibration_error(confidences, correct) == pytest.approx(expected)
