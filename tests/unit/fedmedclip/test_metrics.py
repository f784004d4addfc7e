"""The evaluation metrics on cases small enough to work out by hand."""

import math

import numpy as np
import pytest

from fedmedclip.metrics import classification_metrics, mean_over_sites, rare_class_hits


def _one_hot(predicted: list[int], n_classes: int, confidence: float = 1.0) -> np.ndarray:
    rest = (1.0 - confidence) / (n_classes - 1)
    probabilities = np.full((len(predicted), n_classes), rest)
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def test_imbalanced_labels_separate_accuracy_from_balanced_accuracy() -> None:
    # Nine images of class 0, one of class 1; predicting class 0 always is 90% accurate
    # but recalls half of the classes.
    labels = np.array([0] * 9 + [1])
    metrics = classification_metrics(_one_hot([0] * 10, 2), labels, n_classes=2)
    assert metrics["accuracy"] == pytest.approx(0.9)
    assert metrics["balanced_accuracy"] == pytest.approx(0.5)
    # F1 of class 0 = 18/19, of class 1 = 0
    assert metrics["macro_f1"] == pytest.approx((18 / 19) / 2)


def test_a_class_absent_from_a_site_does_not_count_against_it() -> None:
    labels = np.array([0, 0, 1, 1])
    metrics = classification_metrics(_one_hot([0, 0, 1, 1], 3), labels, n_classes=3)
    assert metrics["balanced_accuracy"] == 1.0 and metrics["macro_f1"] == 1.0


def test_calibration_error_is_the_gap_between_confidence_and_accuracy() -> None:
    labels = np.array([0, 0, 0, 0])
    calibrated = classification_metrics(_one_hot([0, 0, 0, 0], 2), labels, n_classes=2)
    # Confident at 0.9 and right half the time: the one populated bin is off by 0.4.
    overconfident = classification_metrics(
        _one_hot([0, 0, 1, 1], 2, confidence=0.9), labels, n_classes=2
    )
    assert calibrated["ece"] == pytest.approx(0.0)
    assert overconfident["ece"] == pytest.approx(0.4)


def test_no_labels_give_not_a_number_rather_than_an_error() -> None:
    metrics = classification_metrics(np.zeros((0, 2)), np.zeros(0), n_classes=2)
    assert all(math.isnan(v) for v in metrics.values())


def test_sites_count_the_same_in_the_mean() -> None:
    per_site = {
        "a": {"accuracy": 1.0, "balanced_accuracy": 1.0, "macro_f1": 1.0, "ece": 0.0},
        "b": {"accuracy": 0.5, "balanced_accuracy": 0.0, "macro_f1": 0.2, "ece": 0.4},
    }
    assert mean_over_sites(per_site) == pytest.approx(
        {"accuracy": 0.75, "balanced_accuracy": 0.5, "macro_f1": 0.6, "ece": 0.2}
    )


def test_rare_class_hits_count_only_classes_the_site_barely_trained_on() -> None:
    labels = np.array([0, 0, 1, 2, 2])
    hits = rare_class_hits(_one_hot([0, 1, 1, 2, 0], 3), labels, train_counts=[50, 3, 2])
    # classes 1 and 2 are rare (fewer than 5 training images): three images, two right
    assert hits == {"rare_hits": 2.0, "rare_count": 3.0}
