"""Wire schemas that more than one service speaks (pydantic v2).

The aggregator serves them, the hospital node and the inference API read them; keeping
them here means no service imports another.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedmedclip.aggregation import RULES
from fedmedclip.backbone import BackboneError, embedding_dim
from fedmedclip.codec import QUANTIZATIONS
from fedmedclip.model import AdapterConfig
from fedmedclip.trainer import DEFAULT_PRUNE_WEIGHT

Quantization = Literal["fp16", "int8", "int4"]
AggregationRule = Literal["weighted_mean", "median", "trimmed_mean"]
assert set(QUANTIZATIONS) == {"fp16", "int8", "int4"} and set(RULES) == {
    "weighted_mean",
    "median",
    "trimmed_mean",
}


class FamSettings(BaseModel):
    """Options of the shared adapter, fixed for the life of a task."""

    model_config = ConfigDict(extra="forbid")

    learn_prototypes: bool = Field(
        False, description="Learn class prototype offsets and aggregate them with the FAM."
    )
    margin: float = Field(0.0, ge=0.0, le=1.0, description="Row pruning margin.")
    quantization: Quantization = Field("int4", description="Update quantisation on the wire.")
    seed: int = Field(0, ge=0, description="Seed of the version-0 weights.")


class TaskSpec(BaseModel):
    """What the federation learns: classes, prompts, backbone, adapter options."""

    model_config = ConfigDict(extra="forbid")

    class_names: list[str] = Field(..., min_length=2, max_length=1000)
    prompt_template: str = Field("a picture of a {}.", max_length=200)
    backbone: str = Field("ViT-S-32", description="open_clip architecture name.")
    weights_id: str = Field(
        "none", max_length=200, description="Which CLIP weights the sites must use (tag or id)."
    )
    fam: FamSettings = Field(default_factory=FamSettings)

    @field_validator("class_names")
    @classmethod
    def _unique_names(cls, names: list[str]) -> list[str]:
        cleaned = [n.strip() for n in names]
        if any(not n or len(n) > 100 for n in cleaned):
            raise ValueError("class names must be 1 to 100 characters")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("class names must be unique")
        return cleaned

    @field_validator("prompt_template")
    @classmethod
    def _one_placeholder(cls, template: str) -> str:
        if template.count("{}") != 1 or template.replace("{}", "").count("{"):
            raise ValueError("prompt_template must contain exactly one '{}' placeholder")
        return template

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        try:
            embedding_dim(name)
        except BackboneError as exc:  # a ValueError is what pydantic turns into a 422
            raise ValueError(str(exc)) from exc
        return name

    def adapter_config(self) -> AdapterConfig:
        return AdapterConfig(
            dim=embedding_dim(self.backbone),
            n_classes=len(self.class_names),
            learn_prototypes=self.fam.learn_prototypes,
            margin=self.fam.margin,
        )


class TrainingHints(BaseModel):
    """Local training settings the hub suggests for a round."""

    model_config = ConfigDict(extra="forbid")

    local_epochs: int = Field(5, ge=1, le=200)
    lr: float = Field(1e-3, gt=0, le=1.0)
    batch_size: int = Field(64, ge=2, le=4096)
    kd_weight: float = Field(0.04, ge=0, le=10)
    kd_temperature: float = Field(2.0, gt=0, le=100)
    adaptive_kd: bool = True
    prune_weight: float = Field(DEFAULT_PRUNE_WEIGHT, ge=0, le=10)
    calibrate: bool = Field(
        False,
        description="Fit each branch's temperature on the site's validation split. Off by "
        "default: on small validation splits it cost accuracy in the simulator "
        "(bench/accuracy.py).",
    )


class RoundState(StrEnum):
    open = "open"
    aggregating = "aggregating"
    published = "published"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_ROUND_STATES = frozenset({RoundState.published, RoundState.failed, RoundState.cancelled})


class RoundInfo(BaseModel):
    """A round as the hub reports it."""

    id: int
    state: RoundState
    base_version: int
    min_clients: int
    deadline: datetime
    hints: TrainingHints
    aggregation_rule: AggregationRule = "weighted_mean"
    clip_norm: float | None = None
    max_update_norm: float | None = None
    updates_received: int = 0
    result_version: int | None = None
    reason: str | None = None
    created_at: datetime
    closed_at: datetime | None = None


class ModelInfo(BaseModel):
    """Metadata of one global model version."""

    version: int
    parent_version: int | None
    round_id: int | None
    contributors: list[str]
    update_hashes: list[str]
    metrics: dict[str, float]
    blob_sha256: str
    created_at: datetime
    is_production: bool = False


class UpdateReceipt(BaseModel):
    """The hub's answer to an accepted update (the same for a replay of it)."""

    round_id: int
    node_id: int
    sha256: str
    sample_count: int
    received_at: datetime
