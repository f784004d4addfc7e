"""Aggregation of FAM deltas: weighted mean (streaming), coordinate median, trimmed mean.

Every tensor of the shared state is aggregated, thresholds and prototype offsets included
(the reference silently drops thresholds), and the mean is weighted by sample count (the
reference weighs clients uniformly).

``WeightedMean`` keeps one running sum, so its memory does not grow with the number of
updates. The robust rules need every update at once per coordinate; they hold the stacked
updates and are meant for the tens of clients a medical federation has.

Every rule accumulates in float64, so updates whose values are huge but finite (two nodes
sending 2e38 everywhere) cannot overflow a float32 sum into ``inf``. The float32 result is
checked: a rule whose result is not finite raises :class:`NonFiniteAggregate` rather than
return a model that would poison every later round.

:func:`norm_bound` is the default defence of a round against one oversized update:
each update is clipped to ``factor`` times the (lower) median norm of the round's updates.
Honest updates of one round have similar norms (same task, same hints, same base), so with
the default factor of 3 they pass unchanged, while an update 10^6 times larger counts as
at most 3 honest ones. The lower median is used so that with two updates the bound comes
from the smaller one, and it holds as long as fewer than half the updates are oversized.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping

import torch

from fedmedclip.codec import update_norm
from fedmedclip.enums import AggregationRule, parse_choice

Delta = Mapping[str, torch.Tensor]

DEFAULT_NORM_BOUND_FACTOR = 3.0
"""Updates are clipped to this many times the median update norm of their round."""


class NonFiniteAggregate(ValueError):
    """The aggregate (or the model built from it) holds NaN or infinite values."""


def require_finite(state: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise :class:`NonFiniteAggregate` naming the first tensor of ``state`` that is not finite."""
    for name, tensor in state.items():
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise NonFiniteAggregate(
                f"{what} is not finite: tensor {name!r} has {bad} NaN or infinite values"
            )


def _to_float32(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float64 ``state`` as float32, refusing values that do not fit."""
    out = {name: tensor.to(torch.float32) for name, tensor in state.items()}
    require_finite(out, "the aggregated update")
    return out


def norm_bound(norms: Iterable[float], factor: float = DEFAULT_NORM_BOUND_FACTOR) -> float:
    """``factor`` times the lower median of ``norms``: the default clip norm of a round."""
    values = sorted(norms)
    if not values:
        raise ValueError("no update norms to derive a bound from")
    return factor * statistics.median_low(values)


def clip_update(delta: Delta, max_norm: float) -> dict[str, torch.Tensor]:
    """Scale ``delta`` down so that its L2 norm is at most ``max_norm``."""
    norm = update_norm(delta)
    if norm <= max_norm:
        return dict(delta)
    factor = max_norm / norm
    return {k: (v.to(torch.float64) * factor).to(torch.float32) for k, v in delta.items()}


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
        return _to_float32({k: v / self._weight for k, v in self._sum.items()})


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
        return torch.stack([u[name].to(torch.float64) for u in self._updates])

    def result(self) -> dict[str, torch.Tensor]:
        if not self.count:
            raise ValueError("no updates to aggregate")
        return _to_float32({name: self._reduce(self._stack(name)) for name in self._updates[0]})

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
