"""The hub's migrations on SQLite and PostgreSQL; PostgreSQL is never migrated unasked."""

from __future__ import annotations

import json

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from typer.testing import CliRunner

from fedmedclip.schemas import TaskSpec
from services.aggregator.cli import app as aggregator_cli
from services.aggregator.db.migrate import (
    MIGRATIONS,
    SchemaNotCurrentError,
    current_revision,
    head_revision,
    upgrade,
)
from services.aggregator.db.models import Base
from services.aggregator.settings import AggregatorSettings
from services.common.db import Database
from tests.support.hub import ADMIN_TOKEN, running_hub

pytestmark = pytest.mark.integration


def test_migrations_create_exactly_the_models(database_url: str) -> None:
    db = Database.connect(database_url)
    try:
        assert current_revision(db.engine) is None
        assert upgrade(db.engine) == head_revision() == current_revision(db.engine)
        upgrade(db.engine)  # migrating a current database changes nothing
        with db.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        db.dispose()


@pytest.mark.slow
def test_unmigrated_postgres_refuses_to_start_until_migrated(postgres_url, tmp_path) -> None:
    settings = AggregatorSettings(
        data_dir=tmp_path, database_url=postgres_url, admin_token=ADMIN_TOKEN
    )
    refused = pytest.raises(SchemaNotCurrentError, match="run `fedmedclip aggregator migrate`")
    with refused, running_hub(settings):
        pass

    result = CliRunner().invoke(
        aggregator_cli, ["migrate"], env={"FEDMEDCLIP_AGG_DATABASE_URL": postgres_url}
    )
    assert result.exit_code == 0, result.output
    assert f"empty -> {head_revision()}" in result.output

    with running_hub(settings) as hub:
        assert hub.client.get("/ready").status_code == 200
        assert hub.set_task().status_code == 200


def test_a_task_stored_before_class_statistics_keeps_them_off(database_url: str) -> None:
    """Its global versions hold no statistics: turning them on would change every shape."""
    db = Database.connect(database_url)
    try:
        command.upgrade(MIGRATIONS.config(db.engine), "0004_secure_aggregation")
        old_spec = TaskSpec(class_names=["a", "b"]).model_dump(mode="json")
        del old_spec["fam"]["class_statistics"]
        with db.engine.begin() as connection:
            connection.execute(
                text("INSERT INTO task (id, spec, updated_at) VALUES (1, :spec, :now)"),
                {"spec": json.dumps(old_spec), "now": "2026-01-01 00:00:00"},
            )
        upgrade(db.engine)
        with db.engine.connect() as connection:
            stored = connection.execute(text("SELECT spec FROM task")).scalar_one()
        spec = TaskSpec.model_validate(json.loads(stored) if isinstance(stored, str) else stored)
        assert spec.fam.class_statistics is False
        assert not spec.adapter_config().class_statistics
        assert TaskSpec(class_names=["a", "b"]).fam.class_statistics is True  # new tasks: on
    finally:
        db.dispose()
