"""Every aggregator scenario runs twice: on embedded SQLite and on a real PostgreSQL
(``database_url`` from tests/integration/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.aggregator.settings import AggregatorSettings
from tests.support.hub import ADMIN_TOKEN, Hub, running_hub


@pytest.fixture
def settings(database_url: str, tmp_path) -> AggregatorSettings:
    return AggregatorSettings(
        data_dir=tmp_path, database_url=database_url, admin_token=ADMIN_TOKEN, auto_migrate=True
    )


@pytest.fixture
def hub(settings: AggregatorSettings) -> Iterator[Hub]:
    """A running hub with the test task set."""
    with running_hub(settings) as running:
        assert running.set_task().status_code == 200
        yield running
