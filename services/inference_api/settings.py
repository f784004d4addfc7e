"""Settings of the inference API, from ``FEDMEDCLIP_INFERENCE_*`` environment variables.

Each field ``x`` is read from ``FEDMEDCLIP_INFERENCE_X`` (see docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.common.settings import CommaSeparated, HubClientSettings


class InferenceSettings(HubClientSettings):
    """Everything the prediction service can be told; defaults match the documentation."""

    model_config = SettingsConfigDict(env_prefix="FEDMEDCLIP_INFERENCE_")
    deprecated_variables: ClassVar[dict[str, str]] = {
        "FEDMEDCLIP_INFERENCE_AGGREGATOR_TOKEN": "FEDMEDCLIP_INFERENCE_NODE_TOKEN"
    }

    model_store_dir: Path = Field(
        Path("./var/node/model_store"), description="The site's model store (the node's)."
    )
    aggregator_url: str = Field(
        "", description="Follow the hub's production global version when set."
    )
    # Named as in the node (the same token); AGGREGATOR_TOKEN is its deprecated former name.
    node_token: SecretStr = Field(
        SecretStr(""),
        validation_alias=AliasChoices("node_token", "aggregator_token"),
        description="Node token used to read models from the hub.",
    )
    backbone_weights: str = Field(
        "none", description="open_clip pretrained tag, checkpoint path, or none (random)."
    )
    # NoDecode: the variable is a plain comma-separated list, not JSON.
    clinician_tokens: Annotated[list[SecretStr], NoDecode, CommaSeparated] = Field(
        ..., min_length=1, description="Bearer tokens allowed to request predictions."
    )
    admin_token: SecretStr = Field(
        SecretStr(""), description="Bearer token for operator routes (force a reload)."
    )
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Cap on one file.")
    max_files_per_request: int = Field(32, ge=1, description="Cap on files in /predict/batch.")
    max_pixels: int = Field(50_000_000, gt=0, description="Decompression-bomb cap.")
    max_concurrent_decodes: int = Field(
        4,
        ge=1,
        description="Requests decoding images at the same time; the others wait. A decode at "
        "the pixel cap can take about 250 MB, so this bounds the memory of image bursts.",
    )
    batch_window_ms: float = Field(5.0, ge=0, description="Longest wait to fill a micro-batch.")
    max_batch_size: int = Field(16, ge=1, description="Images per forward pass.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    reload_seconds: float = Field(10.0, gt=0, description="Model store / hub check period.")
    audit_path: Path = Field(
        Path("./var/inference/audit.jsonl"), description="Append-only prediction audit log."
    )
    audit_max_bytes: int = Field(
        100 * 1024 * 1024,
        ge=0,
        description="Rotate the audit log when a write would pass this size; 0 = never.",
    )
    audit_backup_count: int = Field(
        20, ge=1, description="Rotated audit files kept (audit.jsonl.1 is the newest)."
    )
    audit_store_images: bool = Field(
        False, description="Also keep each input image next to the audit log (by sha256)."
    )

    predictions_db: Path | None = Field(
        None,
        description="SQLite file of prediction ids and clinician feedback "
        "(default: predictions.sqlite next to the audit log).",
    )
    monitor_window: int = Field(
        256, ge=2, description="Recent embeddings kept per model version for drift tests."
    )
    monitor_min_samples: int = Field(
        20, ge=2, description="Predictions needed before a drift state is given."
    )
    monitor_drift_alpha: float = Field(
        0.01, gt=0, lt=1, description="Level of the MMD permutation test for embedding drift."
    )
    monitor_permutations: int = Field(
        200, ge=20, le=5000, description="Permutations of the MMD drift test."
    )
    monitor_prior_threshold: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Total variation distance from the training class prior flagged as shift.",
    )
    dicomweb_url: str = Field(
        "", description="DICOMweb root of the site's PACS (WADO-RS, QIDO-RS, STOW-RS)."
    )
    dicomweb_username: str = Field("", description="HTTP basic user for the PACS.")
    dicomweb_password: SecretStr = Field(
        SecretStr(""), description="HTTP basic password for the PACS."
    )
    dicomweb_token: SecretStr = Field(
        SecretStr(""), description="Bearer token for the PACS (instead of basic auth)."
    )
    dicomweb_timeout_seconds: float = Field(
        30.0, gt=0, description="Timeout of one PACS request (connect, read, write)."
    )
    dicomweb_max_instances: int = Field(
        64, ge=1, description="Most image instances predicted for one study."
    )
    dicomweb_max_total_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="Cap on the bytes retrieved for one study."
    )

    @field_validator("aggregator_url", "dicomweb_url")
    @classmethod
    def _strip_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("the URL must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _hub_needs_token(self) -> InferenceSettings:
        if self.aggregator_url and not self.node_token.get_secret_value():
            raise ValueError("node_token is required when aggregator_url is set")
        return self

    @model_validator(mode="after")
    def _admin_is_not_a_clinician(self) -> InferenceSettings:
        admin = self.admin_token.get_secret_value()
        if admin and admin in {t.get_secret_value() for t in self.clinician_tokens}:
            raise ValueError("admin_token must differ from every clinician token")
        return self

    @model_validator(mode="after")
    def _one_pacs_credential(self) -> InferenceSettings:
        if self.dicomweb_token.get_secret_value() and self.dicomweb_username:
            raise ValueError("set dicomweb_token or dicomweb_username/password, not both")
        return self

    @property
    def predictions_path(self) -> Path:
        return self.predictions_db or self.audit_path.parent / "predictions.sqlite"

    @property
    def follows_hub(self) -> bool:
        return bool(self.aggregator_url)
