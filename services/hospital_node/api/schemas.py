"""Request and response bodies of the node API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedmedclip.enums import JobState
from fedmedclip.ids import StrictDbId


class DatasetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        ...,
        min_length=1,
        max_length=4096,
        description="ImageFolder or CSV manifest, absolute or relative to a data root.",
    )
    name: str | None = Field(
        None, min_length=1, max_length=200, description="Defaults to the folder or file name."
    )

    @field_validator("path", "name")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # No file system can name a file with NUL (Path raises ValueError on it) and
        # PostgreSQL refuses it in text columns: a 422 here, not a 500 later.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    path: str
    n_images: int
    report: dict[str, Any]
    created_at: datetime


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    round_id: StrictDbId | None = Field(None, description="Defaults to the hub's open round.")


class JobProgressOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    phase: str | None
    epoch: int
    epochs: int | None
    percent: float
    loss: float | None


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    round_id: int
    trigger: str
    state: JobState
    progress: JobProgressOut
    base_version: int | None
    head_version: int | None
    sample_count: int | None
    update_bytes: int | None
    update_sha256: str | None
    metrics: dict[str, float] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None


class HeadOut(BaseModel):
    version: int
    global_version: int | None
    round_id: int | None
    metrics: dict[str, float]
    temperatures: dict[str, float]
    sha256: str


class ModelOut(BaseModel):
    """What the site serves; both versions are null before the first finished job."""

    global_version: int | None
    head_version: int | None
    head: HeadOut | None


class PrivacyOut(BaseModel):
    """The site's differential-privacy settings and budget (docs/privacy.md)."""

    enabled: bool
    clip_norm: float | None
    noise_multiplier: float | None
    delta: float
    max_epsilon: float | None = Field(description="Cap on the cumulative epsilon; null = none.")
    releases: int = Field(description="Noised updates sent (or about to be) so far.")
    epsilon_spent: float = Field(description="Cumulative epsilon at `delta` so far.")
    epsilon_per_update: float | None
    epsilon_after_next: float | None = Field(
        description="Cumulative epsilon once the next update is sent with these settings."
    )
