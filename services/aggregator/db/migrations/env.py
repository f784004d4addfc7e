"""Alembic environment of the hub: the engine comes from ``config.attributes``."""

from __future__ import annotations

from services.aggregator.db.models import Base
from services.common.migrate import run_migrations

run_migrations(Base.metadata)
