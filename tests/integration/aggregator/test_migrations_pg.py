"""PostgreSQL is never migrated behind the operator's back (unless asked to)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from services.aggregator.cli import app as aggregator_cli
from services.aggregator.db.migrate import SchemaNotCurrentError, head_revision
from services.aggregator.settings import AggregatorSettings
from tests.integration.aggregator.support import ADMIN_TOKEN, running_hub

pytestmark = pytest.mark.integration


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
