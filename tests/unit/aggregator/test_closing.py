"""The metrics summary a closed round publishes with its model."""

from __future__ import annotations

import pytest

from services.aggregator.closing import StoredUpdate, metrics_summary


def test_metrics_summary_is_sample_weighted_per_metric() -> None:
    updates = [
        StoredUpdate(1, "a", "x", 10, {"acc": 0.2, "f1": 0.5}),
        StoredUpdate(2, "b", "y", 30, {"acc": 0.6}),
        StoredUpdate(3, "c", "z", 60, {}),
    ]
    summary = metrics_summary(updates)
    assert summary == {"acc": pytest.approx((0.2 * 10 + 0.6 * 30) / 40), "f1": 0.5}
    assert metrics_summary([]) == {}


def test_metrics_summary_keeps_the_worst_privacy_budget() -> None:
    updates = [
        StoredUpdate(1, "a", "x", 90, {"acc": 0.5, "dp_epsilon_total": 1.5}),
        StoredUpdate(2, "b", "y", 10, {"acc": 0.9, "dp_epsilon_total": 8.0}),
    ]
    summary = metrics_summary(updates)
    assert summary["dp_epsilon_total"] == 8.0
    assert summary["acc"] == pytest.approx(0.54)
