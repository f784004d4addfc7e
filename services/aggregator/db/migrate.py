"""The hub's Alembic migrations (package ``migrations`` next to this module).

SQLite migrates itself at start; PostgreSQL is migrated by ``fedmedclip aggregator migrate``
(a one-shot job before the new version starts) or, when asked, at start.
"""

from __future__ import annotations

from services.common.migrate import Migrations, SchemaNotCurrentError

MIGRATIONS = Migrations(
    package="services.aggregator.db.migrations",
    service="aggregator",
    how_to_migrate="run `fedmedclip aggregator migrate` (or set FEDMEDCLIP_AGG_AUTO_MIGRATE=true)",
)

head_revision = MIGRATIONS.head
current_revision = MIGRATIONS.current
upgrade = MIGRATIONS.upgrade
check_current = MIGRATIONS.check_current
prepare_schema = MIGRATIONS.prepare

__all__ = [
    "MIGRATIONS",
    "SchemaNotCurrentError",
    "check_current",
    "current_revision",
    "head_revision",
    "prepare_schema",
    "upgrade",
]
