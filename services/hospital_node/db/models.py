"""SQLAlchemy 2 models of the node's own database: datasets, training jobs, the DP ledger.

The schema is created and changed by the Alembic migrations in ``migrations/`` (a change
here needs a new revision there; a test compares the two).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fedmedclip.enums import JobState
from services.common.db import UTCDateTime, utcnow

# The node's timestamps have always been TIMESTAMP WITH TIME ZONE on PostgreSQL.
UTCTimestamp = UTCDateTime(timezone=True)


class Base(DeclarativeBase):
    pass


class Dataset(Base):
    """A dataset registered by the site admin: where it is and what validation found."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    path: Mapped[str] = mapped_column(Text)
    n_images: Mapped[int]
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCTimestamp, default=utcnow)


class Job(Base):
    """One training job for one round: its state, progress, outcome and heartbeat."""

    __tablename__ = "jobs"
    # At most one job per round that is not failed: the agent and the admin cannot start
    # a round twice, but a failed job may be retried by starting a new one.
    __table_args__ = (
        Index(
            "uq_jobs_live_round",
            "round_id",
            unique=True,
            sqlite_where=text("state != 'failed'"),
            postgresql_where=text("state != 'failed'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int]
    trigger: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20), default=JobState.queued.value)
    phase: Mapped[str | None] = mapped_column(String(40))
    epoch: Mapped[int] = mapped_column(default=0)
    epochs: Mapped[int | None]
    percent: Mapped[float] = mapped_column(default=0.0)
    loss: Mapped[float | None]
    base_version: Mapped[int | None]
    head_version: Mapped[int | None]
    sample_count: Mapped[int | None]
    update_bytes: Mapped[int | None]
    update_sha256: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, float] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCTimestamp, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCTimestamp)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCTimestamp)
    finished_at: Mapped[datetime | None] = mapped_column(UTCTimestamp)

    @property
    def progress(self) -> Job:
        """How far the job got: its phase, epoch, epochs, percent and loss columns, which the
        API nests under ``progress`` (``JobOut.model_validate(job)`` reads them here)."""
        return self

    @property
    def idempotency_key(self) -> str:
        """Stable across retries of this job's upload, distinct for a new job."""
        return f"job-{self.id}-round-{self.round_id}"


class PrivacyRelease(Base):
    """One noised FAM update that left (or was about to leave) the site: the DP ledger.

    Written before the upload, once per privatised payload (a retried upload of the same
    payload is not a new release), and never deleted: the site's cumulative epsilon is
    recomputed from these rows, so losing them would reset its privacy budget.
    """

    __tablename__ = "privacy_releases"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int]
    round_id: Mapped[int]
    clip_norm: Mapped[float]
    noise_multiplier: Mapped[float]
    created_at: Mapped[datetime] = mapped_column(UTCTimestamp, default=utcnow)
