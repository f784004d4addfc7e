"""The node's own database: datasets, training jobs and the DP ledger.

SQLite under ``DATA_DIR`` is the default; the API process and the Celery worker open the
same file (see :mod:`services.common.db`). The schema is owned by Alembic migrations
(``migrations/``), which the node API applies at start on SQLite and PostgreSQL alike: the
API is the schema's single writer (one replica, replaced rather than rolled), while workers
only open the database, and a worker only gets work from an API that has migrated.
A database made by ``create_all`` before the node had migrations is adopted at 0001.
"""

from __future__ import annotations

from services.common.db import Database, utcnow
from services.common.migrate import Migrations
from services.hospital_node.db.models import (
    Base,
    Dataset,
    Job,
    JobState,
    PrivacyRelease,
)

MIGRATIONS = Migrations(
    package="services.hospital_node.db.migrations",
    service="node",
    how_to_migrate="restart the node API, which migrates its database at start",
    legacy_tables=frozenset({"datasets", "jobs", "privacy_releases"}),
    legacy_revision="0001_initial",
)


def open_database(url: str) -> Database:
    """Connect to the node database and bring its schema to the newest revision."""
    db = Database.connect(url)
    try:
        MIGRATIONS.upgrade(db.engine)
    except BaseException:
        db.dispose()
        raise
    return db


__all__ = [
    "MIGRATIONS",
    "Base",
    "Database",
    "Dataset",
    "Job",
    "JobState",
    "PrivacyRelease",
    "open_database",
    "utcnow",
]
