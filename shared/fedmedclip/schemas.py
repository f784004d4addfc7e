"""Wire schemas that more than one service speaks (pydantic v2).

The aggregator serves them; the hospital node, the inference API and the demo (an admin
client) send or read them; keeping them here means no service imports another. The hub
reads those that mirror one of its rows straight from it (``from_attributes``:
``RoundInfo.model_validate(row)``), so a column added to both cannot be forgotten in a
copy; what a row does not hold is given beside it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Strict, Tag, field_validator

from fedmedclip import training_defaults as defaults
from fedmedclip.aggregation import DEFAULT_NORM_BOUND_FACTOR
from fedmedclip.backbone import BackboneError, embedding_dim
from fedmedclip.data.datasets import normalize_class_name
from fedmedclip.enums import AggregationRule, Quantization, RoundState
from fedmedclip.ids import VersionNumber
from fedmedclip.model import AdapterConfig
from fedmedclip.secagg.messages import KeyDirectory, Phase, ShareInbox, UnmaskRequest
from fedmedclip.secagg.params import RoundParams


class FamSettings(BaseModel):
    """Options of the shared adapter, fixed for the life of a task."""

    model_config = ConfigDict(extra="forbid")

    learn_prototypes: bool = Field(
        False, description="Learn class prototype offsets and aggregate them with the FAM."
    )
    class_statistics: bool = Field(
        True,
        description="Sites send class statistics of their embeddings with each update and may "
        "choose the discriminant built from the federation's (fedmedclip.class_statistics). "
        "Tasks stored before this option existed keep it off (migration 0005).",
    )
    margin: float = Field(0.0, ge=0.0, le=1.0, description="Row pruning margin.")
    quantization: Quantization = Field(
        Quantization.int4, description="Update quantisation on the wire."
    )
    seed: int = Field(0, ge=0, description="Seed of the version-0 weights.")


class TaskSpec(BaseModel):
    """What the federation learns: classes, prompts, backbone, adapter options."""

    model_config = ConfigDict(extra="forbid")

    class_names: list[str] = Field(..., min_length=2, max_length=1000)
    prompt_template: str = Field(defaults.PROMPT_TEMPLATE, max_length=200)
    backbone: str = Field("ViT-S-32", description="open_clip architecture name.")
    weights_id: str = Field(
        "none", max_length=200, description="Which CLIP weights the sites must use (tag or id)."
    )
    fam: FamSettings = Field(default_factory=FamSettings)

    @field_validator("class_names")
    @classmethod
    def _unique_names(cls, names: list[str]) -> list[str]:
        # NFC, so that the names the sites' folders and manifests use (NFD on macOS)
        # match these; DatasetError is a ValueError, which pydantic turns into a 422.
        cleaned = [normalize_class_name(n) for n in names]
        if any(len(n) > 100 for n in cleaned):
            raise ValueError("class names must be 1 to 100 characters")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("class names must be unique (compared in Unicode NFC)")
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
            class_statistics=self.fam.class_statistics,
            margin=self.fam.margin,
        )


class TrainingHints(BaseModel):
    """Local training settings the hub suggests for a round."""

    model_config = ConfigDict(extra="forbid")

    local_epochs: int = Field(defaults.LOCAL_EPOCHS, ge=1, le=200)
    lr: float = Field(defaults.LR, gt=0, le=1.0)
    batch_size: int = Field(defaults.BATCH_SIZE, ge=2, le=4096)
    kd_weight: float = Field(defaults.KD_WEIGHT, ge=0, le=10)
    kd_temperature: float = Field(defaults.KD_TEMPERATURE, gt=0, le=100)
    adaptive_kd: bool = defaults.ADAPTIVE_KD
    prune_weight: float = Field(defaults.PRUNE_WEIGHT, ge=0, le=10)
    calibrate: bool = Field(
        defaults.CALIBRATE,
        description="Fit each branch's temperature on the site's validation split. Off by "
        "default: on small validation splits it cost accuracy in the simulator "
        "(bench/accuracy.py).",
    )


class DistributedDP(BaseModel):
    """Distributed differential privacy of a secure round: each site clips its update to
    ``clip_norm`` and adds its share of Gaussian noise, so the sum the hub unmasks carries
    noise of standard deviation ``noise_multiplier * clip_norm`` (see fedmedclip.privacy)."""

    model_config = ConfigDict(extra="forbid")

    noise_multiplier: float = Field(gt=0, le=1000)
    clip_norm: float = Field(gt=0, le=1e6)
    delta: float = Field(1e-5, gt=0, lt=1)


class RoundInfo(BaseModel):
    """A round as the hub reports it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    state: RoundState
    base_version: int
    min_clients: int
    deadline: datetime
    hints: TrainingHints
    aggregation_rule: AggregationRule = AggregationRule.weighted_mean
    clip_norm: float | None = None
    max_update_norm: float | None = None
    norm_bound_factor: float | None = Field(
        None, description="Updates are clipped to this times the median update norm (None: off)."
    )
    applied_clip_norm: float | None = Field(
        None, description="The clip norm the aggregation used (after it ran; None: no clipping)."
    )
    base_reason: str | None = Field(None, description="Why the round trains from base_version.")
    updates_received: int = 0
    result_version: int | None = None
    reason: str | None = None
    created_at: datetime
    closed_at: datetime | None = None
    lease_owner: str | None = Field(
        None, description="host/pid/boot/start of the hub process aggregating the round."
    )
    lease_until: datetime | None = None
    secure_aggregation: bool = Field(
        False, description="The hub learns only the weighted sum of the updates (see /secagg)."
    )
    secagg_phase: Phase | None = Field(None, description="Phase of a secure round.")
    secagg_phase_deadline: datetime | None = Field(
        None, description="When the current phase of a secure round ends at the latest."
    )
    participants: list[str] | None = Field(None, description="The sites of a secure round.")
    dp: DistributedDP | None = Field(None, description="Distributed DP of a secure round.")
    dp_epsilon: float | None = Field(
        None, description="Epsilon this published round spent (at dp.delta), against the hub."
    )
    dp_epsilon_total: float | None = Field(
        None, description="Epsilon of every published DP round so far, composed (at dp.delta)."
    )


class SecAggStatus(BaseModel):
    """What a site of a secure round needs now: the public parameters, the phase and the
    hub's messages of the phases already closed (those addressed to this site)."""

    round_id: int
    client_id: str = Field(description="The asking node's name: its id in the protocol.")
    phase: Phase
    phase_deadline: datetime | None
    params: RoundParams
    reason: str | None = Field(None, description="Why the round failed, when it did.")
    sent: list[Phase] = Field(description="Phases whose message from this site was accepted.")
    directory: KeyDirectory | None = None
    inbox: ShareInbox | None = None
    unmask_request: UnmaskRequest | None = None


class ModelInfo(BaseModel):
    """Metadata of one global model version."""

    model_config = ConfigDict(from_attributes=True)

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

    model_config = ConfigDict(from_attributes=True)

    round_id: int
    node_id: int
    sha256: str
    sample_count: int
    received_at: datetime


def _base_kind(value: object) -> str:
    return "name" if isinstance(value, str) else "number"


BaseChoice = Annotated[
    Annotated[VersionNumber, Strict(), Tag("number")]
    | Annotated[Literal["production", "latest"], Tag("name")],
    Discriminator(_base_kind),
]
"""A version number or a name; the tag keeps validation messages free of type reprs."""


class RoundCreate(BaseModel):
    """What an admin sends to open a round."""

    model_config = ConfigDict(extra="forbid")

    min_clients: int = Field(1, ge=1, le=10_000, description="Updates needed to aggregate.")
    deadline_seconds: int | None = Field(
        None, ge=1, le=30 * 24 * 3600, description="Seconds until the deadline (default: setting)."
    )
    hints: TrainingHints = Field(default_factory=TrainingHints)
    aggregation_rule: AggregationRule = AggregationRule.weighted_mean
    clip_norm: float | None = Field(None, gt=0, description="Clip each update to this L2 norm.")
    max_update_norm: float | None = Field(
        None, gt=0, description="Refuse updates whose L2 norm is larger."
    )
    norm_bound_factor: float | None = Field(
        DEFAULT_NORM_BOUND_FACTOR,
        ge=1,
        le=1000,
        description="Clip each update to this many times the median update norm of the round; "
        "null turns the default bound off.",
    )
    base_version: BaseChoice = Field(
        "production",
        description="Version to train from: a number, 'production' (default) or 'latest'.",
    )
    secure_aggregation: bool = Field(
        False,
        description="Pairwise-mask secure aggregation: the hub learns only the weighted sum. "
        "Needs weighted_mean, at least 3 participants and no max_update_norm; "
        "norm_bound_factor is not applied (the hub never sees one update), clip_norm is "
        "applied by each site before masking and checked by the hub on the sum.",
    )
    participants: list[str] | None = Field(
        None,
        max_length=10_000,
        description="Node names taking part in a secure round (default: every active node).",
    )
    secagg_threshold: int | None = Field(
        None, ge=2, description="Shares needed to rebuild a secret (default: 2/3 of neighbours)."
    )
    dp: DistributedDP | None = Field(
        None,
        description="Distributed DP (secure rounds only): each site clips and adds its noise "
        "share; the mean is then unweighted (every site counts once).",
    )
    secagg_phase_seconds: int = Field(
        120,
        ge=1,
        le=24 * 3600,
        description="How long the key, share and unmask phases of a secure round wait for "
        "missing sites (the upload phase lasts until the round deadline).",
    )


_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class NodeCreate(BaseModel):
    """What an admin sends to register a hospital node."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Unique site name: letters, digits, '.', '_' or '-'.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not _NODE_NAME.fullmatch(name):
            raise ValueError(
                "node name must be 1 to 100 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return name


class NodeIdentity(BaseModel):
    """A registered node, as the hub names it."""

    id: int
    name: str


class NodeCreated(NodeIdentity):
    """The hub's answer to a registration: the node's bearer token, shown once."""

    token: str = Field(..., description="Shown only in this answer; store it at the site.")


MAX_TOKEN_GRACE_SECONDS = 86400


class NodeTokenRotate(BaseModel):
    """What an admin sends to give a node a new token (the answer is a :class:`NodeCreated`)."""

    model_config = ConfigDict(extra="forbid")

    grace_seconds: int = Field(
        0,
        ge=0,
        le=MAX_TOKEN_GRACE_SECONDS,
        description="How long the old token keeps working, so the site can switch without a "
        "gap; 0 refuses it at once.",
    )


class NodeInfo(NodeIdentity):
    """A registered node as the hub lists it: when it registered, was last seen, was revoked."""

    model_config = ConfigDict(from_attributes=True)

    created_at: datetime
    last_seen: datetime | None
    revoked_at: datetime | None


class AuditEntry(BaseModel):
    """One event of the hub's append-only audit trail."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor: str = Field(description="admin, system, node:<name>, or a person's identity.")
    action: str = Field(description="e.g. round.open, update.rejected, model.promote.")
    target: str | None
    details: dict[str, Any]
