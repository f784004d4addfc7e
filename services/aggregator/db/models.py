"""SQLAlchemy 2 typed models of the hub's state.

Update payloads and model blobs live in the database (``LargeBinary``), next to their
metadata, so that one backup or one restart covers everything the federation produced.
``audit_events`` is append-only: the migration adds triggers that refuse UPDATE and DELETE.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Task(Base):
    """The single task of this federation (row id 1)."""

    __tablename__ = "task"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Node(Base):
    """A hospital node; only the sha256 of its token is kept.

    After a token rotation, ``previous_token_hash`` is the old token's sha256, accepted
    until ``previous_token_expires_at`` (the grace period the admin chose) and answered
    with "rotated" afterwards.
    """

    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    previous_token_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    previous_token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Round(Base):
    """A training round and its life cycle.

    ``active`` is True while the round is open or aggregating and NULL afterwards; its
    unique constraint lets the database itself refuse a second active round (NULLs never
    collide), even with several hub instances. ``claim_token``, ``lease_until`` and
    ``lease_owner`` (host/pid/boot/start of the process) belong to the instance that is
    aggregating, so a crashed aggregation is taken over after the lease, or at once when
    the owner is a dead process of the same host.
    """

    __tablename__ = "rounds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    active: Mapped[bool | None] = mapped_column(Boolean, unique=True)
    base_version: Mapped[int] = mapped_column(ForeignKey("model_versions.version"))
    min_clients: Mapped[int] = mapped_column(Integer)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    hints: Mapped[dict[str, Any]] = mapped_column(JSON)
    aggregation_rule: Mapped[str] = mapped_column(String(32))
    clip_norm: Mapped[float | None] = mapped_column(Float)
    max_update_norm: Mapped[float | None] = mapped_column(Float)
    result_version: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(300))
    norm_bound_factor: Mapped[float | None] = mapped_column(Float)
    applied_clip_norm: Mapped[float | None] = mapped_column(Float)
    base_reason: Mapped[str | None] = mapped_column(Text)
    secure_aggregation: Mapped[bool] = mapped_column(Boolean, default=False)
    secagg_params: Mapped[str | None] = mapped_column(Text)
    secagg_phase: Mapped[str | None] = mapped_column(String(16))
    secagg_phase_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    secagg_phase_seconds: Mapped[int | None] = mapped_column(Integer)
    dp: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    dp_effective_noise: Mapped[float | None] = mapped_column(Float)
    dp_epsilon: Mapped[float | None] = mapped_column(Float)
    dp_epsilon_total: Mapped[float | None] = mapped_column(Float)


class SecAggMessage(Base):
    """One accepted secure-aggregation message of a site, as the JSON it arrived as.

    The hub's protocol state is rebuilt from these rows (replayed in order) on every use,
    so any hub replica, or a restarted one, carries on a round. Masked uploads are stored
    as sent: masked, never an individual update in the clear.
    """

    __tablename__ = "secagg_messages"
    __table_args__ = (UniqueConstraint("round_id", "phase", "node_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    phase: Mapped[str] = mapped_column(String(16))
    node_name: Mapped[str] = mapped_column(String(100))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Update(Base):
    """One node's encoded FAM delta for one round, stored as received."""

    __tablename__ = "updates"
    __table_args__ = (UniqueConstraint("round_id", "node_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    sample_count: Mapped[int] = mapped_column(Integer)
    local_metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    size_bytes: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelVersion(Base):
    """A global model version: safetensors blob plus the metadata served as ModelInfo."""

    __tablename__ = "model_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    parent_version: Mapped[int | None] = mapped_column(Integer)
    round_id: Mapped[int | None] = mapped_column(Integer)
    contributors: Mapped[list[str]] = mapped_column(JSON)
    update_hashes: Mapped[list[str]] = mapped_column(JSON)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    blob_sha256: Mapped[str] = mapped_column(String(64))
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProductionEvent(Base):
    """A change of the production version; the newest row is the current one.

    ``previous_id`` links each row to the event it replaced, so a rollback follows the
    link instead of guessing, and repeated rollbacks walk further back.
    """

    __tablename__ = "production_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(ForeignKey("model_versions.version"))
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("production_events.id"))
    action: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEvent(Base):
    """Append-only record of who did what."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(40), index=True)
    target: Mapped[str | None] = mapped_column(String(120))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
