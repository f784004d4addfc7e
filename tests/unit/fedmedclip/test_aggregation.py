"""Aggregation against hand-computed results; robust rules resist one outlier."""

import tracemalloc

import torch

from fedmedclip.aggregation import aggregate, clip_update
from fedmedclip.codec import update_norm


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
