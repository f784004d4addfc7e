"""Schema: migrations equal the models, audit is append-only, unmigrated is detected."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, StatementError

from services.aggregator import audit
from services.aggregator.db.migrate import (
    SchemaNotCurrentError,
    check_current,
    current_revision,
    head_revision,
    prepare_schema,
)
from services.aggregator.db.models import AuditEvent, Base, Node
from services.common.db import Database


@pytest.fixture
def db(tmp_path):
    database = Database.connect(f"sqlite:///{tmp_path / 'nested' / 'hub.db'}")
    yield database
    database.dispose()


def test_migrations_create_exactly_the_models(db: Database) -> None:
    with pytest.raises(SchemaNotCurrentError, match="fedmedclip aggregator migrate"):
        check_current(db.engine)
    assert current_revision(db.engine) is None
    prepare_schema(db.engine, auto_migrate=False)  # SQLite always migrates itself
    assert current_revision(db.engine) == head_revision()
    check_current(db.engine)
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_audit_events_cannot_be_changed_or_deleted(db: Database) -> None:
    prepare_schema(db.engine, auto_migrate=False)
    with db.write() as session:
        audit.record(session, audit.ADMIN, "task.set", "task", note="first")
    for statement in ("UPDATE audit_events SET actor = 'mallory'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"), db.write() as session:
            session.execute(text(statement))
    with db.read() as session:
        assert session.scalars(select(AuditEvent.actor)).all() == ["admin"]


def test_times_round_trip_as_aware_utc_and_naive_times_are_refused(db: Database) -> None:
    prepare_schema(db.engine, auto_migrate=False)
    seen = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    with db.write() as session:
        session.add(Node(name="alpha", token_hash="0" * 64, last_seen=seen))
    with db.read() as session:
        assert session.scalars(select(Node.last_seen)).one() == seen
    with pytest.raises(StatementError, match="naive datetime"), db.write() as session:
        session.add(Node(name="beta", token_hash="1" * 64, last_seen=datetime(2024, 5, 1)))
