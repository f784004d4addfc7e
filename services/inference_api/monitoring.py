"""Site monitoring: does the served model still fit the patients it sees?

Per served model version (global FAM version, head version) the service keeps running
counts in bounded memory: predicted classes, histograms of confidence, entropy, ensemble
weight (alpha) and input statistics (mean and standard deviation of the preprocessed
pixels), and a window of the most recent embeddings (``monitor_window`` rows). Nothing here
leaves the site: the numbers are served on ``GET /monitoring`` and ``/metrics`` to the
site's own operators.

Drift state of a version (the thresholds are settings, documented in the README):

* ``unknown``: the head was stored without a training-feature sample (older nodes).
* ``insufficient_data``: fewer than ``monitor_min_samples`` predictions in the window.
* ``drift``: the MMD permutation test (:mod:`fedmedclip.monitoring`) says the window's
  embeddings differ from the head's training sample at level ``monitor_drift_alpha``.
* ``ok``: otherwise.

The predicted-class distribution is compared with the head's training class prior by total
variation distance; above ``monitor_prior_threshold`` it is flagged as ``shift`` but does
not set the drift state, because a different case mix (a screening day) moves it too.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch

from fedmedclip import monitoring as stats
from services.inference_api.metrics import InferenceMetrics
from services.inference_api.model_loader import LoadedModel
from services.inference_api.predictor import Prediction

UNIT_EDGES = stats.uniform_edges(0.0, 1.0, 10)
INPUT_MEAN_EDGES = stats.uniform_edges(-3.0, 3.0, 12)
INPUT_STD_EDGES = stats.uniform_edges(0.0, 3.0, 12)
REFERENCE_SEED = 0


class DriftState(StrEnum):
    unknown = "unknown"
    insufficient_data = "insufficient_data"
    ok = "ok"
    drift = "drift"


DRIFT_GAUGE = {
    DriftState.unknown: -1,
    DriftState.insufficient_data: -1,
    DriftState.ok: 0,
    DriftState.drift: 1,
}


@dataclass(frozen=True)
class MonitorLimits:
    """Window size and decision thresholds (the ``monitor_*`` settings)."""

    window: int = 256
    min_samples: int = 20
    drift_alpha: float = 0.01
    permutations: int = 200
    prior_threshold: float = 0.25


class _Histogram:
    def __init__(self, edges: list[float]) -> None:
        self.edges = edges
        self.counts = [0] * (len(edges) - 1)
        self.total = 0.0
        self.n = 0

    def add(self, value: float) -> None:
        for i, c in enumerate(stats.histogram([value], self.edges)):
            self.counts[i] += c
        self.total += value
        self.n += 1

    def report(self) -> dict[str, Any]:
        mean = self.total / self.n if self.n else None
        return {"edges": self.edges, "counts": list(self.counts), "mean": mean}


@dataclass
class _VersionStats:
    """Running statistics of one model version (guarded by the monitor's lock)."""

    model: LoadedModel
    window: deque[torch.Tensor]
    predictions: int = 0
    classes: list[int] = field(default_factory=list)
    confidence: _Histogram = field(default_factory=lambda: _Histogram(UNIT_EDGES))
    entropy: _Histogram = field(default_factory=lambda: _Histogram(UNIT_EDGES))
    alpha: _Histogram = field(default_factory=lambda: _Histogram(UNIT_EDGES))
    input_mean: _Histogram = field(default_factory=lambda: _Histogram(INPUT_MEAN_EDGES))
    input_std: _Histogram = field(default_factory=lambda: _Histogram(INPUT_STD_EDGES))
    cached: tuple[int, dict[str, Any]] | None = None


def version_key(model: LoadedModel) -> tuple[int, int]:
    return (model.global_version, model.head_version)


class SiteMonitor:
    """Running per-version statistics and their drift verdicts; thread-safe."""

    def __init__(self, limits: MonitorLimits, metrics: InferenceMetrics) -> None:
        self.limits = limits
        self.metrics = metrics
        self._versions: dict[tuple[int, int], _VersionStats] = {}
        self._lock = threading.Lock()

    def observe(
        self, model: LoadedModel, pixels: list[torch.Tensor], predictions: list[Prediction]
    ) -> None:
        """Add one request's images (preprocessed pixels) and their predictions."""
        names = model.class_names
        with self._lock:
            entry = self._versions.get(version_key(model))
            if entry is None:
                entry = _VersionStats(model, deque(maxlen=self.limits.window))
                entry.classes = [0] * len(names)
                self._versions[version_key(model)] = entry
            for image, prediction in zip(pixels, predictions, strict=True):
                entry.predictions += 1
                entry.classes[names.index(prediction.label)] += 1
                entry.confidence.add(prediction.confidence)
                probabilities = [prediction.probabilities[n] for n in names]
                entry.entropy.add(stats.normalized_entropy(probabilities))
                entry.alpha.add(prediction.alpha)
                entry.input_mean.add(float(image.float().mean()))
                entry.input_std.add(float(image.float().std()))
                if prediction.embedding is not None:
                    entry.window.append(prediction.embedding)

    def versions(self) -> list[tuple[int, int]]:
        with self._lock:
            return sorted(self._versions)

    def report(self, key: tuple[int, int]) -> dict[str, Any]:
        """Everything known about one version (the drift test is cached per count)."""
        with self._lock:
            entry = self._versions[key]
            if entry.cached is not None and entry.cached[0] == entry.predictions:
                return entry.cached[1]
            count = entry.predictions
            window = list(entry.window)
            classes = list(entry.classes)
            histograms = {
                "confidence": entry.confidence.report(),
                "entropy": entry.entropy.report(),
                "alpha": entry.alpha.report(),
            }
            inputs = {"mean": entry.input_mean.report(), "std": entry.input_std.report()}
        model = entry.model
        report = {
            "global_version": model.global_version,
            "head_version": model.head_version,
            "predictions": count,
            "class_names": model.class_names,
            "predicted_classes": dict(zip(model.class_names, classes, strict=True)),
            "class_prior": self._prior(model, classes, count),
            "histograms": histograms,
            "input": inputs,
            "drift": self._drift(model, window),
        }
        with self._lock:
            entry.cached = (count, report)
        self._export(report)
        return report

    def _prior(self, model: LoadedModel, classes: list[int], count: int) -> dict[str, Any]:
        predicted = stats.distribution(classes)
        prior_counts = model.class_counts
        if prior_counts is None or len(prior_counts) != len(classes) or sum(prior_counts) == 0:
            return {"predicted": predicted, "training": None, "total_variation": None}
        training = stats.distribution(prior_counts)
        distance = stats.total_variation(predicted, training)
        return {
            "predicted": predicted,
            "training": training,
            "total_variation": distance,
            "threshold": self.limits.prior_threshold,
            "shift": count >= self.limits.min_samples and distance > self.limits.prior_threshold,
        }

    def _drift(self, model: LoadedModel, window: list[torch.Tensor]) -> dict[str, Any]:
        limits = self.limits
        base: dict[str, Any] = {
            "window": len(window),
            "alpha": limits.drift_alpha,
            "min_samples": limits.min_samples,
        }
        reference = model.reference_features
        if reference is None or len(reference) < 2:
            return base | {
                "state": DriftState.unknown,
                "reason": "the head was stored without a training-feature sample",
            }
        if len(window) < max(limits.min_samples, 2):
            return base | {
                "state": DriftState.insufficient_data,
                "reason": f"{len(window)} of the {limits.min_samples} predictions needed",
            }
        if len(reference) > limits.window:  # same size as the window: equal weight
            rows = torch.randperm(
                len(reference), generator=torch.Generator().manual_seed(REFERENCE_SEED)
            )
            reference = reference[rows[: limits.window]]
        test = stats.mmd_permutation_test(
            torch.stack(window),
            reference.float().cpu(),
            permutations=limits.permutations,
            alpha=limits.drift_alpha,
        )
        state = DriftState.drift if test.drift else DriftState.ok
        return base | {
            "state": state,
            "reason": "embeddings differ from the training sample"
            if test.drift
            else "embeddings match the training sample",
            "reference": len(reference),
            "mmd": test.statistic,
            "threshold": test.threshold,
            "p_value": test.p_value,
            "bandwidth": test.bandwidth,
        }

    def _export(self, report: dict[str, Any]) -> None:
        labels = (str(report["global_version"]), str(report["head_version"]))
        drift = report["drift"]
        self.metrics.drift_state.labels(*labels).set(DRIFT_GAUGE[drift["state"]])
        self.metrics.drift_mmd.labels(*labels).set(drift.get("mmd", float("nan")))
        distance = report["class_prior"]["total_variation"]
        self.metrics.prior_distance.labels(*labels).set(
            float("nan") if distance is None else distance
        )
        self.metrics.monitored.labels(*labels).set(report["predictions"])
