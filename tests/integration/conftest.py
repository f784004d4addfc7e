"""Fixtures shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each supported backend: a SQLite file, a real PostgreSQL.

    The PostgreSQL variant is marked ``slow`` so that the fast loop (``pytest -m "not slow"``)
    runs each database test once, on SQLite, and starts no PostgreSQL server; CI runs both.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'test.db'}"
    return request.getfixturevalue("postgres_url")
