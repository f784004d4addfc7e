"""From image bytes to an ensemble prediction: decode, preprocess, encode, adapt, ensemble.

Split in two halves because they scale differently: :func:`prepare` runs per request (in
the request's worker thread, where a bad image fails alone), :func:`forward` runs once per
micro-batch. :func:`predict_bytes` chains them for one image: the bare in-process path
that the benchmark compares the service with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fedmedclip.backbone import Backbone
from fedmedclip.prediction import predict
from services.inference_api.model_loader import LoadedModel


@dataclass(frozen=True)
class BranchPrediction:
    """One branch's answer (FAM text-prototype branch or private head)."""

    label: str
    probabilities: dict[str, float]


@dataclass(frozen=True)
class Prediction:
    """The combined answer for one image (under the head's recorded combination), with each
    branch and the head weight ``alpha``."""

    label: str
    probabilities: dict[str, float]
    alpha: float
    fam: BranchPrediction
    head: BranchPrediction
    statistics: BranchPrediction | None = None
    """The federated class statistics' discriminant; None when the global model has none."""
    local: BranchPrediction | None = None
    """The site's local head (trained alone); None when the node stored none."""
    embedding: torch.Tensor | None = field(default=None, repr=False, compare=False)
    """The backbone embedding (CPU), kept for drift monitoring; never sent or logged."""

    @property
    def confidence(self) -> float:
        """Probability of the predicted class."""
        return self.probabilities[self.label]


def prepare(data: bytes, backbone: Backbone, max_pixels: int) -> torch.Tensor:
    """Decode untrusted bytes (raises ImageDecodeError) into the backbone's input (3xHxW)."""
    return backbone.prepare_bytes(data, max_pixels)


def _branch(names: list[str], probabilities: torch.Tensor) -> BranchPrediction:
    values = probabilities.tolist()
    return BranchPrediction(
        label=names[int(probabilities.argmax())],
        probabilities=dict(zip(names, values, strict=True)),
    )


def forward(model: LoadedModel, pixels: torch.Tensor) -> list[Prediction]:
    """Predictions for a preprocessed batch (N x 3 x H x W), in input order."""
    features = model.backbone.encode_tensors(pixels)
    out = predict(
        model.adapter,
        model.head,
        features,
        model.text_prototypes,
        model.temperatures,
        model.combination,
        model.local,
    )
    names = model.class_names
    predictions = []
    for i in range(len(features)):
        ensemble = _branch(names, out.probabilities[i])
        predictions.append(
            Prediction(
                label=ensemble.label,
                probabilities=ensemble.probabilities,
                alpha=float(out.alpha[i]),
                fam=_branch(names, out.fam_probabilities[i]),
                head=_branch(names, out.head_probabilities[i]),
                statistics=(
                    None
                    if out.stats_probabilities is None
                    else _branch(names, out.stats_probabilities[i])
                ),
                local=(
                    None
                    if out.local_probabilities is None
                    else _branch(names, out.local_probabilities[i])
                ),
                embedding=features[i].detach().float().cpu(),
            )
        )
    return predictions


def predict_bytes(model: LoadedModel, data: bytes, max_pixels: int) -> Prediction:
    """One image through the whole pipeline in this thread, without any service around."""
    return forward(model, prepare(data, model.backbone, max_pixels).unsqueeze(0))[0]
