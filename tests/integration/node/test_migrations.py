"""The node's migrations on SQLite and PostgreSQL, and adopting a pre-migrations database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError

from services.common.migrate import SchemaNotCurrentError
from services.hospital_node.app import create_app
from services.hospital_node.db import MIGRATIONS, Base, Database, Job, JobState, open_database
from services.hospital_node.settings import NodeSettings
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer site-admin"}
CREATED = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


def _legacy_schema() -> sa.MetaData:
    """The tables that ``create_all`` made before the node had migrations, frozen here.

    A copy on purpose: the models will change, the databases made back then will not.
    """
    metadata = sa.MetaData()
    stamp = sa.DateTime(timezone=True)
    sa.Table(
        "datasets",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("n_images", sa.Integer, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("created_at", stamp, nullable=False),
    )
    jobs = sa.Table(
        "jobs",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("round_id", sa.Integer, nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("phase", sa.String(40)),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("epochs", sa.Integer),
        sa.Column("percent", sa.Double, nullable=False),
        sa.Column("loss", sa.Double),
        sa.Column("base_version", sa.Integer),
        sa.Column("head_version", sa.Integer),
        sa.Column("sample_count", sa.Integer),
        sa.Column("update_bytes", sa.Integer),
        sa.Column("update_sha256", sa.String(64)),
        sa.Column("metrics", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("created_at", stamp, nullable=False),
        sa.Column("started_at", stamp),
        sa.Column("heartbeat_at", stamp),
        sa.Column("finished_at", stamp),
    )
    not_failed = sa.text("state != 'failed'")
    sa.Index(
        "uq_jobs_live_round",
        jobs.c.round_id,
        unique=True,
        sqlite_where=not_failed,
        postgresql_where=not_failed,
    )
    sa.Table(
        "privacy_releases",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("round_id", sa.Integer, nullable=False),
        sa.Column("clip_norm", sa.Double, nullable=False),
        sa.Column("noise_multiplier", sa.Double, nullable=False),
        sa.Column("created_at", stamp, nullable=False),
    )
    return metadata


def _make_legacy_database(url: str) -> None:
    """A node database as an older node left it: tables with rows, no migration history."""
    metadata = _legacy_schema()
    db = Database.connect(url)
    try:
        metadata.create_all(db.engine)
        tables = metadata.tables
        with db.write() as session:
            session.execute(
                sa.insert(tables["jobs"]).values(
                    id=1,
                    round_id=4,
                    trigger="admin",
                    state="done",
                    epoch=2,
                    percent=100.0,
                    created_at=CREATED,
                )  # fmt: skip
            )
            session.execute(
                sa.insert(tables["privacy_releases"]),
                [
                    {
                        "job_id": 1,
                        "round_id": r,
                        "clip_norm": 0.5,
                        "noise_multiplier": 4.0,
                        "created_at": CREATED,
                    }
                    for r in (3, 4)
                ],  # fmt: skip
            )
    finally:
        db.dispose()


def _assert_schema_is_the_models(db: Database) -> None:
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_migrations_create_exactly_the_models(database_url: str) -> None:
    db = open_database(database_url)
    try:
        assert MIGRATIONS.current(db.engine) == MIGRATIONS.head()
        _assert_schema_is_the_models(db)
        # The partial unique index: one live job per round, a failed one may be retried.
        with db.write() as session:
            session.add(Job(round_id=7, trigger="admin", state=JobState.failed.value))
            session.add(Job(round_id=7, trigger="admin", state=JobState.queued.value))
        with pytest.raises(IntegrityError), db.write() as session:
            session.add(Job(round_id=7, trigger="agent", state=JobState.queued.value))
    finally:
        db.dispose()


def test_a_database_made_by_create_all_is_adopted_with_its_rows(
    database_url: str, tmp_path: Path
) -> None:
    _make_legacy_database(database_url)
    settings = NodeSettings(
        aggregator_url=f"http://127.0.0.1:{free_port()}",
        node_token="node",
        admin_token="site-admin",
        data_dir=tmp_path / "node",
        database_url=database_url,
        model_store_dir=tmp_path / "store",
        hub_retries=0,
        poll_seconds=60,
        dp_clip_norm=0.5,
        dp_noise_multiplier=4.0,
    )
    for _ in range(2):  # the first start adopts the database, the second finds it current
        with TestClient(create_app(settings)) as client:
            privacy = client.get("/api/v1/privacy", headers=ADMIN)
            assert privacy.status_code == 200, privacy.text
            assert privacy.json()["releases"] == 2
            job = client.get("/api/v1/jobs/1", headers=ADMIN)
            assert job.status_code == 200 and job.json()["state"] == "done"

    db = Database.connect(database_url)
    try:
        assert MIGRATIONS.current(db.engine) == "0001_initial" == MIGRATIONS.head()
        _assert_schema_is_the_models(db)  # what create_all made is exactly revision 0001
        with db.read() as session:
            stamps = session.scalars(sa.text("SELECT created_at FROM privacy_releases")).all()
        assert len(stamps) == 2
    finally:
        db.dispose()


def test_a_database_with_only_some_node_tables_is_left_alone(database_url: str) -> None:
    metadata = _legacy_schema()
    db = Database.connect(database_url)
    try:
        metadata.tables["jobs"].create(db.engine)
        with pytest.raises(SchemaNotCurrentError, match="lacks datasets, privacy_releases"):
            MIGRATIONS.upgrade(db.engine)
        assert MIGRATIONS.current(db.engine) is None
    finally:
        db.dispose()
