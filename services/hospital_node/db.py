"""The node's own database: datasets, training jobs and the DP ledger (SQLAlchemy 2).

SQLite under ``DATA_DIR`` is the default; the API process and the Celery worker open the
same file (WAL mode and a busy timeout let them write concurrently). The schema is small
and owned by this service alone, so ``create_all`` at start-up stands in for migrations.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Index,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from fedmedclip.enums import JobState


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str) -> Engine:
    """Engine for ``url``; creates the SQLite folder and the tables when missing."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    return engine


class Database:
    """An engine and its session factory; one per process and database URL."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
