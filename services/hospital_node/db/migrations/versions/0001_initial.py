"""Initial schema: datasets, jobs (one live job per round), the privacy ledger.

This is exactly the schema that ``create_all`` made before the node had migrations, so a
database from that time is stamped at this revision rather than created again.

Revision ID: 0001_initial
Revises:
Create Date: 2025-06-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.common.db import UTCDateTime

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

_NOT_FAILED = sa.text("state != 'failed'")


def _timestamp(name: str, *, nullable: bool) -> sa.Column:
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("n_images", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        _timestamp("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("phase", sa.String(length=40), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=True),
        sa.Column("percent", sa.Double(), nullable=False),
        sa.Column("loss", sa.Double(), nullable=True),
        sa.Column("base_version", sa.Integer(), nullable=True),
        sa.Column("head_version", sa.Integer(), nullable=True),
        sa.Column("sample_count", sa.Integer(), nullable=True),
        sa.Column("update_bytes", sa.Integer(), nullable=True),
        sa.Column("update_sha256", sa.String(length=64), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _timestamp("created_at", nullable=False),
        _timestamp("started_at", nullable=True),
        _timestamp("heartbeat_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    # At most one job per round that is not failed (a failed one may be retried).
    op.create_index(
        "uq_jobs_live_round",
        "jobs",
        ["round_id"],
        unique=True,
        sqlite_where=_NOT_FAILED,
        postgresql_where=_NOT_FAILED,
    )
    op.create_table(
        "privacy_releases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("clip_norm", sa.Double(), nullable=False),
        sa.Column("noise_multiplier", sa.Double(), nullable=False),
        _timestamp("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("privacy_releases")
    op.drop_index("uq_jobs_live_round", table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("datasets")
