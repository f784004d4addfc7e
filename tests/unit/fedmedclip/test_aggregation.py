"""Aggregation against hand-computed results; robust rules resist one outlier."""

import tracemalloc

import pytest
import torch

from fedmedclip.aggregation import (
    DEFAULT_NORM_BOUND_FACTOR,
    NonFiniteAggregate,
    aggregate,
    clip_update,
    norm_bound,
    require_finite,
)
from fedmedclip.codec import update_norm
from fedmedclip.enums import AggregationRule


def _delta(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 3), value), "threshold": torch.full((2,), value * 2)}


def test_weighted_mean_matches_hand_computation():
    result = aggregate([(_delta(1.0), 10), (_delta(4.0), 30)], rule="weighted_mean")
    assert torch.allclose(result["w"], torch.full((2, 3), (1 * 10 + 4 * 30) / 40))
    assert torch.allclose(result["threshold"], torch.full((2,), 2 * (1 * 10 + 4 * 30) / 40))


def test_robust_rules_resist_one_poisoned_update():
    honest = [(_delta(1.0 + 0.01 * i), 10) for i in range(4)]
    poisoned = honest + [(_delta(1000.0), 10)]
    mean = aggregate(poisoned, rule="weighted_mean")["w"].mean().item()
    median = aggregate(poisoned, rule="median")["w"].mean().item()
    trimmed = aggregate(poisoned, rule="trimmed_mean", trim=0.2)["w"].mean().item()
    assert mean > 100
    assert abs(median - 1.02) < 0.05
    assert abs(trimmed - 1.02) < 0.05


def test_norm_clipping_bounds_each_update():
    big = _delta(100.0)
    clipped = clip_update(big, 1.0)
    assert abs(update_norm(clipped) - 1.0) < 1e-5
    small = _delta(0.001)
    assert torch.equal(clip_update(small, 1.0)["w"], small["w"])
    clipped_mean = aggregate([(big, 1), (_delta(0.0), 1)], rule="weighted_mean", clip_norm=1.0)
    assert update_norm(clipped_mean) <= 0.5 + 1e-5


def test_weighted_mean_streams_in_constant_memory():
    def stream(n: int):
        for i in range(n):
            yield {"w": torch.full((256, 256), float(i))}, 1.0

    def peak(n: int) -> int:
        tracemalloc.start()
        aggregate(stream(n))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(5), peak(50)
    assert large < small * 1.5


@pytest.mark.parametrize("rule", list(AggregationRule))
def test_huge_finite_updates_do_not_overflow_any_rule(rule: str) -> None:
    """Two nodes sending 2e38 everywhere: a float32 sum would be inf, float64 is not."""
    huge = {"w": torch.full((3, 2), 2e38), "b": torch.full((2,), -2e38)}
    result = aggregate([(huge, 1.0), (huge, 1.0)], rule=rule)
    assert all(torch.isfinite(t).all() for t in result.values())
    torch.testing.assert_close(result["w"], huge["w"])


def test_a_model_that_overflows_is_refused_by_name() -> None:
    base = {"w": torch.full((2,), 3e38)}
    state = {k: base[k] + torch.full((2,), 3e38) for k in base}
    with pytest.raises(NonFiniteAggregate, match="tensor 'w' has 2 NaN or infinite values"):
        require_finite(state, "the new model")
    require_finite(base, "the base model")  # finite: no error


def test_norm_bound_is_factor_times_the_lower_median() -> None:
    assert norm_bound([1.0, 2.0, 1e30], factor=3.0) == 6.0
    assert norm_bound([2.0, 1e30], factor=3.0) == 6.0  # two updates: the smaller one counts
    assert norm_bound([5.0]) == 5.0 * DEFAULT_NORM_BOUND_FACTOR
    with pytest.raises(ValueError, match="no update norms"):
        norm_bound([])


def test_clipping_to_the_norm_bound_tames_one_oversized_update() -> None:
    honest = [{"w": torch.full((4,), 0.1 * (i + 1))} for i in range(3)]
    attacker = {"w": torch.full((4,), 1e30)}
    updates = [*honest, attacker]
    bound = norm_bound(update_norm(u) for u in updates)
    result = aggregate([(u, 1.0) for u in updates], clip_norm=bound)
    assert update_norm(result) <= bound  # the attacker moved the mean by at most the bound
    for update in honest:  # honest updates pass unchanged
        assert clip_update(update, bound)["w"].equal(update["w"])
