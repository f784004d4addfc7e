"""The hub's migrations on SQLite and PostgreSQL; PostgreSQL is never migrated unasked."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from typer.testing import CliRunner

from services.aggregator.cli import app as aggregator_cli
from services.aggregator.db.migrate import (
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
