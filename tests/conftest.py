"""Session-wide fixtures: real PostgreSQL and Redis servers (see tests/support/processes.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.processes import create_database, postgres_server, redis_server

pytest_plugins = ["tests.support.store_fixtures"]


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return create_database(postgres_admin_url, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url
