"""Prediction-time ensemble of the FAM (text prototype) branch and the private head."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedmedclip.losses import entropy_from_logits


@dataclass(frozen=True)
class EnsembleOutput:
    """Probabilities of the ensemble and of each branch, and the head weight ``alpha``
    (``stats_probabilities`` None when the global model holds no class statistics,
    ``local_probabilities`` None when the site has no local head)."""

    probabilities: torch.Tensor
    fam_probabilities: torch.Tensor
    head_probabilities: torch.Tensor
    alpha: torch.Tensor
    stats_probabilities: torch.Tensor | None = None
    local_probabilities: torch.Tensor | None = None


def ensemble(
    fam_logits: torch.Tensor,
    head_logits: torch.Tensor,
    *,
    fam_temperature: float = 1.0,
    head_temperature: float = 1.0,
) -> EnsembleOutput:
    """``p = (1 - a) * p_fam + a * p_head`` with a per-sample ``a = H_fam / (H_fam + H_head)``.

    The more confident (lower entropy) branch weighs more. Temperatures calibrated on the
    local validation split are applied first, because entropy reflects confidence only when
    a branch is calibrated; with the defaults of 1 this is the paper's ensemble.
    """
    fam_scaled = fam_logits / fam_temperature
    head_scaled = head_logits / head_temperature
    h_fam = entropy_from_logits(fam_scaled)
    h_head = entropy_from_logits(head_scaled)
    alpha = h_fam / (h_fam + h_head).clamp_min(1e-12)
    p_fam = torch.softmax(fam_scaled, dim=-1)
    p_head = torch.softmax(head_scaled, dim=-1)
    p = (1.0 - alpha).unsqueeze(-1) * p_fam + alpha.unsqueeze(-1) * p_head
    return EnsembleOutput(p, p_fam, p_head, alpha)


TEMPERATURE_PRIOR_SIGMA = 0.5
"""Spread of the log-normal prior on a fitted temperature (T within about 0.4-2.7 at 2 sd)."""


def fit_temperature(
    logits: torch.Tensor, labels: torch.Tensor, prior_sigma: float = TEMPERATURE_PRIOR_SIGMA
) -> float:
    """Temperature minimising the negative log-likelihood on held-out logits, shrunk to 1.

    Why the prior: a hospital's validation split can be a dozen images. On so few, a branch
    that happens to get them all right drives the plain NLL fit to its smallest temperature,
    and the near-certain branch then dominates the entropy-weighted ensemble. A log-normal
    prior centred on T = 1 (MAP estimate) leaves large splits to the data and keeps small
    ones near the uncalibrated logits. It guards against that degenerate fit; it did not
    make calibration pay off in the simulator (bench/README.md), which is why rounds
    calibrate only when asked. A log-spaced grid search: one dimension, cheap, and it
    never diverges the way an optimiser can.
    """
    n = len(labels)
    if n == 0:
        return 1.0
    grid = torch.logspace(-2, 2, steps=81)
    losses = [
        torch.nn.functional.cross_entropy(logits / t, labels).item()
        + math.log(t) ** 2 / (2 * prior_sigma**2 * n)
        for t in grid.tolist()
    ]
    return float(grid[int(torch.tensor(losses).argmin())])


CombinationKind = Literal[
    "entropy", "head", "fam", "weighted", "statistics", "head_statistics", "local"
]
WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(1, 10))
"""Head weights a fitted mixture is chosen from (0 and 1 are the branches alone)."""

WEIGHTED_KINDS = frozenset({"weighted", "head_statistics"})
STATISTICS_KINDS = frozenset({"statistics", "head_statistics"})


class Combination(BaseModel):
    """How a site combines its branches, chosen on its validation split.

    ``entropy``: the paper's per-sample entropy weighting of the FAM branch and the head (the
    default, and what a head recorded without a choice gets). ``head`` / ``fam``: one branch
    alone. ``weighted``: a fixed head weight ``head_weight`` against the FAM branch.
    ``statistics``: the federated class statistics' discriminant alone
    (:mod:`fedmedclip.class_statistics`); ``head_statistics``: the head at ``head_weight``
    against it. ``local``: the site's local head, trained alone on the frozen version-0 FAM
    (what the site would have without the federation; ``fedmedclip.heads.LocalHead``).
    Stored with the head (JSON), so the inference API combines the branches exactly as the
    site validated them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: CombinationKind = "entropy"
    head_weight: float | None = Field(default=None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _weight_only_when_weighted(self) -> Combination:
        if (self.kind in WEIGHTED_KINDS) != (self.head_weight is not None):
            raise ValueError(
                "head_weight is required for kinds 'weighted' and 'head_statistics' and only "
                "for them"
            )
        return self

    @property
    def uses_statistics(self) -> bool:
        return self.kind in STATISTICS_KINDS

    def apply(
        self,
        fam_logits: torch.Tensor,
        head_logits: torch.Tensor,
        *,
        stats_logits: torch.Tensor | None = None,
        local_logits: torch.Tensor | None = None,
        fam_temperature: float = 1.0,
        head_temperature: float = 1.0,
    ) -> EnsembleOutput:
        """Probabilities under this combination; ``alpha`` is the head's weight per sample.

        Raises ValueError when the combination needs a branch that is not given: the
        statistics (a global model without them) or the local head (none stored).
        """
        if self.kind == "local":
            if local_logits is None:
                raise ValueError("combination 'local' needs the site's local head")
            p_local = torch.softmax(local_logits, dim=-1)
            alpha = torch.ones(p_local.shape[:1], dtype=p_local.dtype, device=p_local.device)
            return EnsembleOutput(
                p_local,
                torch.softmax(fam_logits / fam_temperature, dim=-1),
                torch.softmax(head_logits / head_temperature, dim=-1),
                alpha,
                _softmax(stats_logits),
                p_local,
            )
        if self.kind == "entropy":
            out = ensemble(
                fam_logits,
                head_logits,
                fam_temperature=fam_temperature,
                head_temperature=head_temperature,
            )
            return dataclasses.replace(
                out,
                stats_probabilities=_softmax(stats_logits),
                local_probabilities=_softmax(local_logits),
            )
        p_fam = torch.softmax(fam_logits / fam_temperature, dim=-1)
        p_head = torch.softmax(head_logits / head_temperature, dim=-1)
        p_stats = _softmax(stats_logits)
        weight = {"head": 1.0, "fam": 0.0, "statistics": 0.0}.get(self.kind, self.head_weight)
        assert weight is not None  # the validator guarantees it for the weighted kinds
        other = p_fam
        if self.uses_statistics:
            if p_stats is None:
                raise ValueError(
                    f"combination {self.kind!r} needs the class statistics, which this "
                    "global model does not hold"
                )
            other = p_stats
        alpha = torch.full(p_fam.shape[:1], weight, dtype=p_fam.dtype, device=p_fam.device)
        return EnsembleOutput(
            (1.0 - weight) * other + weight * p_head,
            p_fam,
            p_head,
            alpha,
            p_stats,
            _softmax(local_logits),
        )


def _softmax(logits: torch.Tensor | None) -> torch.Tensor | None:
    return None if logits is None else torch.softmax(logits, dim=-1)


@dataclass(frozen=True)
class CombinationChoice:
    """The chosen combination and its evidence: each candidate's class-balanced mean
    log-likelihood on validation and the standard error of the last accepted gain."""

    combination: Combination
    scores: dict[str, float]
    noise: float


NOISE_Z = 1.0
"""A candidate must beat the simpler incumbent by this many standard errors of the gain."""


def _balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample weights: each class present counts the same (they sum to 1)."""
    counts = torch.bincount(labels)
    present = int((counts > 0).sum())
    return 1.0 / (present * counts[labels].double())


def _gain(
    scores: torch.Tensor, incumbent: torch.Tensor, weights: torch.Tensor
) -> tuple[float, float]:
    """Class-balanced gain of per-sample ``scores`` over ``incumbent``, and its standard error.

    Paired: each validation image compares the two combinations on itself, so the noise is
    that of the difference, not of either score.
    """
    d = weights * (scores - incumbent)
    n = len(d)
    se = float(d.std(unbiased=True) * math.sqrt(n)) if n > 1 else math.inf
    return float(d.sum()), se


LOG_FLOOR = 1e-6
"""Smallest probability a log-likelihood counts: one confident miss must not outweigh a split."""


def choose_combination(
    fam_logits: torch.Tensor,
    head_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    stats_logits: torch.Tensor | None = None,
    local_logits: torch.Tensor | None = None,
    fam_temperature: float = 1.0,
    head_temperature: float = 1.0,
    z: float = NOISE_Z,
) -> CombinationChoice:
    """Pick the combination with the best class-balanced log-likelihood on the validation split.

    Robust to small splits: candidates are tried from the simplest up, and one replaces the
    incumbent only when its gain exceeds ``z`` standard errors of the paired gain; on a
    handful of images the site keeps the first. Without class statistics the candidates are
    the paper's entropy ensemble (the incumbent), one branch alone, then a fitted head
    weight, which is tuned on the same split and so flatters itself. With them they are the
    head, the statistics' discriminant, then a fitted mixture of the two: on the benchmark
    the FAM branch's cosine scores were then chosen on validation noise and cost test
    accuracy (docs/method.md, Class statistics), while the head still sees the adapted
    features. Why log-likelihood and not hits: on the simulator's 15-image splits a hit
    count moves in steps of a whole image and chose worse than the default; the
    log-likelihood sees how far each answer was from right. Why class-balanced: with label
    skew a plain mean rewards ignoring the rare classes, which is where sharing helps.

    With ``local_logits`` (the site's local head) that head is the first incumbent: a
    federated option is kept only where it beats training alone by more than the noise,
    so a site that federation does not help keeps what it would have had alone, and one
    it helps takes the gain (docs/method.md, The local head).
    """
    if len(labels) == 0:
        return CombinationChoice(Combination(), {}, 0.0)
    temps = {"fam_temperature": fam_temperature, "head_temperature": head_temperature}
    weights = _balanced_weights(labels)
    rows = torch.arange(len(labels))

    def log_likelihood(combination: Combination) -> torch.Tensor:
        predicted = combination.apply(
            fam_logits, head_logits, stats_logits=stats_logits, local_logits=local_logits, **temps
        ).probabilities
        return predicted[rows, labels].double().clamp_min(LOG_FLOOR).log()

    if stats_logits is None:
        simple = [Combination(), Combination(kind="head"), Combination(kind="fam")]
        fitted = [Combination(kind="weighted", head_weight=w) for w in WEIGHT_GRID]
    else:
        simple = [Combination(kind="head"), Combination(kind="statistics")]
        fitted = [Combination(kind="head_statistics", head_weight=w) for w in WEIGHT_GRID]
    if local_logits is not None:
        simple.insert(0, Combination(kind="local"))
    per_sample = {c: log_likelihood(c) for c in simple + fitted}
    scores = {_label(c): float((weights * s).sum()) for c, s in per_sample.items()}
    order = [*simple, max(fitted, key=lambda c: scores[_label(c)])]
    chosen, noise = order[0], 0.0
    for candidate in order[1:]:
        gain, se = _gain(per_sample[candidate], per_sample[chosen], weights)
        if gain > 0 and gain > z * se:
            chosen, noise = candidate, se
    return CombinationChoice(chosen, scores, noise)


def _label(combination: Combination) -> str:
    if combination.head_weight is not None:
        return f"weighted:{combination.head_weight:g}"
    return combination.kind
