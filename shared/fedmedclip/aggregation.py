"""Aggregation of FAM deltas: weighted mean (streaming), coordinate median, trimmed mean.

Every tensor of the shared state is aggregated, thresholds and prototype offsets included
(the reference silently drops thresholds), and the mean is weighted by sample count (the
reference weighs clients uniformly).

``WeightedMean`` keeps one running sum, so its memory does not grow with the number of
updates. The robust rules need every update at once per coordinate; they hold the stacked
updates and are meant for the tens of clients a medical federation has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from fedmedclip.codec import update_norm
from fedmedclip.enums import AggregationRule, parse_choice

Delta = Mapping[str, torch.Tensor]


def clip_update(delta: Delta, max_norm: float) -> dict[str, torch.Tensor]:
    """Scale ``delta`` down so that its L2 norm is at most ``max_norm``."""
    norm = update_norm(delta)
    factor = min(1.0, max_norm / norm) if norm > 0 else 1.0
    return {k: v * factor for k, v in delta.items()}


class WeightedMean:
    """Running sample-weighted mean; constant memory in the number of updates."""

    def __init__(self) -> None:
        self._sum: dict[str, torch.Tensor] = {}
        self._weight = 0.0
        self.count = 0

    def add(self, delta: Delta, weight: float) -> None:
        if weight <= 0:
            raise ValueError(f"update weight must be positive, got {weight}")
        for name, tensor in delta.items():
            if name in self._sum:
                self._sum[name].add_(tensor, alpha=weight)
            else:
                self._sum[name] = tensor.to(torch.float64) * weight
        self._weight += weight
        self.count += 1

    def result(self) -> dict[str, torch.Tensor]:
        if not self.count:
            raise ValueError("no updates to aggregate")
        return {k: (v / self._weight).to(torch.float32) for k, v in self._sum.items()}


class _Stacked:
    """Collects updates for rules that need all values of a coordinate at once."""

    def __init__(self) -> None:
        self._updates: list[Delta] = []
        self.count = 0

    def add(self, delta: Delta, weight: float) -> None:
        del weight  # robust rules treat every client alike, so one node cannot buy influence
        self._updates.append(delta)
        self.count += 1

    def _stack(self, name: str) -> torch.Tensor:
        return torch.stack([u[name].to(torch.float32) for u in self._updates])

    def result(self) -> dict[str, torch.Tensor]:
        if not self.count:
            raise ValueError("no updates to aggregate")
        return {name: self._reduce(self._stack(name)) for name in self._updates[0]}

    def _reduce(self, stacked: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class CoordinateMedian(_Stacked):
    """Per-coordinate median."""

    def _reduce(self, stacked: torch.Tensor) -> torch.Tensor:
        return stacked.median(dim=0).values


class TrimmedMean(_Stacked):
    """Per-coordinate mean after dropping the ``trim`` fraction of largest and smallest values."""

    def __init__(self, trim: float = 0.2) -> None:
        super().__init__()
        if not 0 <= trim < 0.5:
            raise ValueError("trim fraction must be in [0, 0.5)")
        self.trim = trim

    def _reduce(self, stacked: torch.Tensor) -> torch.Tensor:
        n = stacked.shape[0]
        k = min(int(n * self.trim), (n - 1) // 2)
        ordered = stacked.sort(dim=0).values
        return ordered[k : n - k].mean(dim=0)


def make_rule(
    rule: AggregationRule | str, trim: float = 0.2
) -> WeightedMean | CoordinateMedian | TrimmedMean:
    """An empty accumulator for ``rule`` (an :class:`AggregationRule` or its value)."""
    match parse_choice(AggregationRule, rule, "aggregation rule"):
        case AggregationRule.weighted_mean:
            return WeightedMean()
        case AggregationRule.median:
            return CoordinateMedian()
        case AggregationRule.trimmed_mean:
            return TrimmedMean(trim)


def aggregate(
    updates: Iterable[tuple[Delta, float]],
    *,
    rule: AggregationRule | str = AggregationRule.weighted_mean,
    clip_norm: float | None = None,
    trim: float = 0.2,
) -> dict[str, torch.Tensor]:
    """Aggregate ``(delta, sample_count)`` pairs, clipping each delta first when asked.

    ``updates`` may be a generator, so the weighted mean never holds more than one update.
    """
    acc = make_rule(rule, trim)
    for delta, weight in updates:
        acc.add(clip_update(delta, clip_norm) if clip_norm is not None else delta, weight)
    return acc.result()
