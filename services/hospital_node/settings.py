"""Node settings from ``FEDMEDCLIP_NODE_*`` environment variables (see docs/architecture.md).

The API process and the Celery worker read the same variables, so a site configures both
from one environment (one ConfigMap in the Helm chart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from fedmedclip.privacy import DPConfig
from services.common.settings import CommaSeparated, HubClientSettings, sqlite_or_configured


class NodeSettings(HubClientSettings):
    """Everything the node API, its agent and its worker need to know."""

    model_config = SettingsConfigDict(env_prefix="FEDMEDCLIP_NODE_")

    aggregator_url: str = Field("http://127.0.0.1:8100", description="The hub.")
    node_token: SecretStr = Field(
        SecretStr(""), description="This node's bearer token from the hub."
    )
    admin_token: SecretStr = Field(SecretStr(""), description="Site admin token for the node API.")
    console_session_secret: SecretStr | None = Field(
        None,
        description="Key that signs console sessions; random per process when unset "
        "(sessions then end at restart and are not shared between replicas).",
    )
    broker_url: str = Field("", description="Redis URL for Celery; empty = in-process jobs.")
    data_roots: Annotated[list[Path], NoDecode, CommaSeparated] = Field(
        default_factory=list, description="Folders datasets may live in (comma-separated)."
    )
    data_dir: Path = Field(Path("./var/node"), description="Node database and feature cache.")
    database_url: SecretStr | None = Field(
        None, description="SQLAlchemy URL of the node database; empty = SQLite in data_dir."
    )
    feature_cache_dir: Path | None = Field(
        None, description="Cache of image embeddings; empty = DATA_DIR/feature_cache."
    )
    model_store_dir: Path = Field(
        Path("./var/node/model_store"), description="Model store shared with the inference API."
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    backbone_weights: str = Field("none", description="open_clip tag, checkpoint path or none.")
    auto_join: bool = Field(False, description="Start a job for every open round.")
    poll_seconds: float = Field(
        5.0, gt=0, description="Agent poll period; also how often a job checks its round."
    )
    # Operational knobs with safe defaults (not needed in a normal install).
    hub_retries: int = Field(5, ge=0, le=20, description="Retries of a failed hub call.")
    hub_backoff_seconds: float = Field(
        0.5, ge=0, description="First retry delay; doubles on every retry (capped at 30 s)."
    )
    hub_timeout_seconds: float = Field(30.0, gt=0, description="Timeout of one hub request.")
    job_stale_seconds: float = Field(
        60.0, gt=0, description="A running job without a heartbeat for this long has failed."
    )
    # Client-side differential privacy on the FAM delta (docs/privacy.md); off when 0.
    dp_clip_norm: float = Field(
        0.0, ge=0, description="Clip each update to this L2 norm; 0 = no DP."
    )
    dp_noise_multiplier: float = Field(
        0.0, ge=0, description="Gaussian noise std as a multiple of dp_clip_norm."
    )
    dp_delta: float = Field(1e-5, gt=0, lt=1, description="Delta of the reported (epsilon, delta).")
    dp_max_epsilon: float = Field(
        0.0,
        ge=0,
        description="Refuse a job that would take the cumulative epsilon past this; 0 = no cap.",
    )

    @field_validator("aggregator_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _default_cache_dir(self) -> NodeSettings:
        if self.feature_cache_dir is None:
            self.feature_cache_dir = self.data_dir / "feature_cache"
        return self

    @model_validator(mode="after")
    def _dp_both_or_neither(self) -> NodeSettings:
        if (self.dp_clip_norm > 0) != (self.dp_noise_multiplier > 0):
            raise ValueError(
                "set both FEDMEDCLIP_NODE_DP_CLIP_NORM and FEDMEDCLIP_NODE_DP_NOISE_MULTIPLIER "
                "to turn differential privacy on, or neither"
            )
        return self

    def dp_config(self) -> DPConfig | None:
        """The site's DP settings, or None when updates are sent without DP."""
        if self.dp_clip_norm <= 0:
            return None
        return DPConfig(self.dp_clip_norm, self.dp_noise_multiplier, self.dp_delta)

    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file inside ``data_dir``."""
        return sqlite_or_configured(self.database_url, self.data_dir, "node.db")
