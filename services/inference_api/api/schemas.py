"""Response bodies of the inference API."""

from __future__ import annotations

from pydantic import BaseModel, Field

from services.inference_api.model_loader import LoadedModel
from services.inference_api.predictor import BranchPrediction
from services.inference_api.service import Answer


class BranchOut(BaseModel):
    label: str
    probabilities: dict[str, float]

    @classmethod
    def of(cls, branch: BranchPrediction) -> BranchOut:
        return cls(label=branch.label, probabilities=branch.probabilities)


class ModelRef(BaseModel):
    """The exact models that answered."""

    global_version: int
    head_version: int
    backbone: str
    weights: str = Field(description="random, tag:<open_clip tag> or path:<checkpoint>")

    @classmethod
    def of(cls, model: LoadedModel) -> ModelRef:
        return cls(
            global_version=model.global_version,
            head_version=model.head_version,
            backbone=model.backbone.name,
            weights=model.weights,
        )


class PredictionOut(BaseModel):
    id: str = Field(description="Prediction id, for POST /predictions/{id}/feedback.")
    label: str
    probabilities: dict[str, float]
    alpha: float = Field(description="Weight of the private head in the ensemble (0..1).")
    branches: dict[str, BranchOut] = Field(
        description="'fam' and 'head' predictions; 'statistics' (the federated class "
        "statistics' discriminant) when the global model holds them; 'local' (the site's "
        "head trained alone) when the node stored it."
    )
    input_sha256: str
    model: ModelRef
    latency_ms: float

    @classmethod
    def of(cls, answer: Answer, model: LoadedModel, latency_ms: float) -> PredictionOut:
        p = answer.prediction
        return cls(
            id=answer.prediction_id,
            label=p.label,
            probabilities=p.probabilities,
            alpha=p.alpha,
            branches={
                name: BranchOut.of(branch)
                for name, branch in (
                    ("fam", p.fam),
                    ("head", p.head),
                    ("statistics", p.statistics),
                    ("local", p.local),
                )
                if branch is not None
            },
            input_sha256=answer.input_sha256,
            model=ModelRef.of(model),
            latency_ms=latency_ms,
        )


class BatchPredictionOut(BaseModel):
    predictions: list[PredictionOut]
    model: ModelRef
    latency_ms: float


class FeedbackIn(BaseModel):
    label: str = Field(min_length=1, max_length=200, description="The confirmed class name.")


class FeedbackOut(BaseModel):
    prediction_id: str
    predicted: str
    label: str
    correct: bool
    global_version: int
    head_version: int
