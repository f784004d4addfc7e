"""Alembic environment of the node: the engine comes from ``config.attributes``."""

from __future__ import annotations

from services.common.migrate import run_migrations
from services.hospital_node.db.models import Base

run_migrations(Base.metadata)
